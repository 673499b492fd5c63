"""What operators type into `wgsyncd fleet` (wgsyncd/fleet.py) and how cells are shown (commands/fleet.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from wgsyncd import fleet
from wgsyncd.commands import fleet as fleet_cli

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "back"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        (" 24h ", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_since_as_a_duration_back_from_now(text: str, back: timedelta) -> None:
    assert fleet.parse_since(text, NOW) == NOW - back


def test_since_as_an_iso_time_naive_is_utc() -> None:
    assert fleet.parse_since("2026-11-20", NOW) == datetime(2026, 11, 20, tzinfo=UTC)
    assert fleet.parse_since("2026-11-27T08:00:00+02:00", NOW) == datetime(2026, 11, 27, 6, tzinfo=UTC)


@pytest.mark.parametrize("text", ["", "yesterday", "7", "-1d", "1y", "24 h", "99999999d", "2026-13-01"])
def test_a_bad_since_is_one_line_naming_the_option(text: str) -> None:
    with pytest.raises(fleet.FleetInputError, match=r"^--since: '.*' is neither a duration") as exc:
        fleet.parse_since(text, NOW)
    assert "\n" not in str(exc.value)


def test_since_too_far_back_is_refused_not_a_crash() -> None:
    with pytest.raises(fleet.FleetInputError, match="before year 1"):
        fleet.parse_since("9999999d", NOW)


def test_since_in_the_future_is_refused() -> None:
    with pytest.raises(fleet.FleetInputError, match="in the future"):
        fleet.parse_since("2026-11-28", NOW)


def test_since_escapes_what_it_echoes() -> None:
    with pytest.raises(fleet.FleetInputError) as exc:
        fleet.parse_since("\x1b]0;x\x07", NOW)
    assert "\x1b" not in str(exc.value) and "\\x1b" in str(exc.value)


@pytest.mark.parametrize(("text", "days"), [("0", 0), ("7", 7), (" 30 ", 30), ("36500", 36500)])
def test_days(text: str, days: int) -> None:
    assert fleet.parse_days(text) == days


@pytest.mark.parametrize("text", ["", "-1", "1.5", "7d", "36501", "١٢"])
def test_bad_days(text: str) -> None:
    with pytest.raises(fleet.FleetInputError, match=r"^--days: '.*' is not a whole number of days"):
        fleet.parse_days(text)


def test_numeric_sums_become_int_and_fractions_float() -> None:
    assert fleet._value(Decimal("54000")) == 54000 and isinstance(fleet._value(Decimal("54000")), int)
    assert fleet._value(Decimal("1.5")) == 1.5
    assert fleet._value("x") == "x"


def test_stale_summary_counts_never_apart() -> None:
    s = fleet.Stale(7, [{"latest_handshake": None}, {"latest_handshake": NOW}, {"latest_handshake": None}])
    assert (s.never, s.summary()) == (
        2,
        "3 peers without a handshake for 7 days (2 never had one, 1 went quiet)",
    )


def test_cells_escape_control_and_bidi_characters_and_join_lists() -> None:
    assert fleet_cli._text("a\nb\x1b[31m\u202e") == "a\\nb\\x1b[31m\\u202e"
    assert fleet_cli._text(["10.0.0.1/32", "fd00::1/128"]) == "10.0.0.1/32,fd00::1/128"
    assert fleet_cli._text(5) == 5


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, ""),
        ("ok", "ok"),
        ("", '""'),
        ("a b", '"a b"'),
        ('say "x"', '"say \\"x\\""'),
        ("k=v", '"k=v"'),
        (7, "7"),
    ],
)
def test_key_value_quoting(value: object, shown: str) -> None:
    assert fleet_cli._quoted(value) == shown
