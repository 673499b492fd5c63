"""The fault suite's short form (issue 16 item 2): runs in CI's fast tier and prints its figures.

`make faults` runs the same scenarios bigger (python -m tests.faults). Real
PostgreSQL killed for real, wireguard-go with real handshakes and traffic, the real
daemon process; see rig.py and scenarios.py.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from tests.beds import unavailable
from tests.faults import scenarios
from tests.faults.report import format_rows
from tests.faults.rig import Rig

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.root]


@pytest.fixture
def rig(wg_bed) -> Iterator[Rig]:
    import os

    if os.geteuid() != 0:
        unavailable("faults", "needs root (namespaces, mounts, signals to postgres)")
    r = Rig(wg_bed).start()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def show(capsys):
    """Print a row to the terminal even under pytest's capture (the figures are the point)."""

    def emit(row: scenarios.Row) -> None:
        with capsys.disabled():
            print("\n" + format_rows([row]))

    return emit


def no_loss(row: scenarios.Row) -> None:
    """What holds for every scenario on this branch."""
    assert row.rows_equal_dump == "yes", row
    assert row.partial == 0, row
    assert row.totals_equal_deltas == "yes", row
    # first what pytest would cut off: bad exits (run, exit code, last words) and the first traceback
    assert row.crashes == 0, (row.extra.get("bad_exits"), row.extra.get("traceback"), row)


def test_postgres_killed_at_random_points(rig: Rig, show) -> None:
    row = scenarios.pg_kills(rig, 4, random.Random(16))
    show(row)
    no_loss(row)
    assert row.extra["lost_rx"] == row.extra["lost_tx"] == 0, row
    assert row.versions_lost == "0", row
    assert "DB unreachable" in row.log_line or "DB write failed" in row.log_line


def test_a_database_that_never_answers(rig: Rig, show) -> None:
    row = scenarios.silent_db(rig, 1, random.Random(16))
    show(row)
    no_loss(row)
    budget = row.extra["budget"]
    assert all(t < budget + 2 * rig.interval + 3 for t in row.extra["failed_after"]), row  # type: ignore[attr-defined]
    assert "no answer within" in row.log_line


def test_outage_with_counter_resets_and_a_transient_peer(rig: Rig, show) -> None:
    row = scenarios.outage_with_resets(rig, 2, random.Random(16))
    show(row)
    no_loss(row)
    assert row.versions_lost == "0", row
    lost = row.extra["lost_rx"] + row.extra["lost_tx"]  # type: ignore[operator]
    assert 0 <= lost <= row.extra["burst"], row  # at most what flowed between the last read and a reset


def test_interface_deleted_and_recreated(rig: Rig, show) -> None:
    row = scenarios.interface_recreated(rig, 2, random.Random(16))
    show(row)
    no_loss(row)
    assert row.extra["lost_rx"] == row.extra["lost_tx"] == 0, row


def test_sigterm_at_random_points_of_a_cycle(rig: Rig, show) -> None:
    row = scenarios.sigterm_cycles(rig, 4, random.Random(16))
    show(row)
    no_loss(row)
    assert row.extra["inside"] >= 1, row  # the aimed ones landed inside a cycle
    assert row.extra["lost_rx"] == row.extra["lost_tx"] == 0, row


def test_sigterm_during_a_spool_replay(rig: Rig, show) -> None:
    row = scenarios.sigterm_replay(rig, 2, random.Random(16))
    show(row)
    no_loss(row)
    assert row.versions_lost == "0", row
    assert row.extra["lost_rx"] == row.extra["lost_tx"] == 0, row


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_state_dir_full_or_read_only(rig: Rig, show, fault: str) -> None:
    row = scenarios.state_dir_fault(rig, 3, random.Random(16), fault)
    show(row)
    assert row.rows_equal_dump == "yes" and row.partial == 0 and row.crashes == 0, row
    assert row.extra["warnings"] == 1, row
    # full: the heartbeat is fresh until it goes stale, so the loop is (rightly) healthy until then;
    # read-only from the start: no heartbeat at all (the stale case is test_daemon_deadline's)
    said = str(row.extra["status_local"])
    assert said.startswith("healthy") if fault == "full" else "no usable last-cycle file" in said, said


def test_wgrest_flapping_is_measured(rig: Rig, show) -> None:
    from tests.faults import scenarios_more

    row = scenarios_more.wgrest_flapping(rig, 2, random.Random(16))
    show(row)
    no_loss(row)
    assert row.extra["rewrites"] == 0, row  # a source away for a cycle never rewrites rows
    assert row.extra["statuses"].get("partial", 0) > 0, row  # ... and its absence is reported


def test_conf_rewritten_in_place_is_measured(rig: Rig, show) -> None:
    from tests.faults import scenarios_more

    row = scenarios_more.conf_rewritten_in_place(rig, 6, random.Random(16))
    show(row)
    assert row.crashes == 0 and row.partial == 0, row
    assert row.extra["torn_versions"] == 0, row  # a half-written file never became a version
