"""The column encoders against a real PostgreSQL: what unnest + casts store equals what INSERT stores."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from wgsyncd import store
from wgsyncd.config import DatabaseConfig
from wgsyncd.store import copytext

pytestmark = pytest.mark.postgres

COLS = "t text, i bigint, n numeric, b boolean, ts timestamptz, a text[], j jsonb"
NASTY = [
    "plain",
    "tab\there",
    "new\nline\r\n",
    "back\\slash \\N \\t",
    'quote " and {braces}, commas',
    "NULL",
    "",
    "ünïcode ✓",
    " leading and trailing ",
]


def rows() -> list[tuple[Any, ...]]:
    """Every type the writer sends, with the awkward values of each."""
    out: list[tuple[Any, ...]] = []
    for k, s in enumerate(NASTY):
        out.append(
            (
                s,
                -(2**63) if k == 0 else 2**63 - 1 if k == 1 else k,
                10**30 + k,
                k % 2 == 0,
                datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC) + timedelta(days=k),
                [s, "x", None, "NULL", ""] if k % 3 else [],
                Jsonb({"k": s, "list": [1, None, True], "nested": {"\\": "\t"}}),
            )
        )
    out.append((None, None, None, None, None, None, Jsonb(None)))
    odd_zone = timezone(timedelta(hours=-7, minutes=-30))
    out.append(("tz", 0, 0, False, datetime(2030, 6, 1, 3, 0, tzinfo=odd_zone), ["a"], Jsonb([])))
    return out


@pytest.fixture
def conn(db_config: DatabaseConfig) -> Iterator[psycopg.Connection[Any]]:
    """A plain store connection with two scratch tables."""
    c = store.connect(db_config)
    c.execute(f"CREATE TEMP TABLE via_copy (k serial, {COLS})")
    c.execute(f"CREATE TEMP TABLE via_insert (k serial, {COLS})")
    yield c
    c.close()


def test_text_columns_store_exactly_what_insert_stores(conn: psycopg.Connection[Any]) -> None:
    """What the store's functions get: one text[] per column, each element cast back in SQL."""
    data = rows()
    names = "t, i, n, b, ts, a, j"
    casts = "t, i::bigint, n::numeric, b::boolean, ts::timestamptz, a::text[], j::jsonb"
    with conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO via_copy ({names}) SELECT {casts} FROM unnest("
            + ", ".join(["%s::text[]"] * 7)
            + ") AS u(t, i, n, b, ts, a, j)",
            copytext.text_columns(data, 7),
        )
        cur.executemany(f"INSERT INTO via_insert ({names}) VALUES (%s, %s, %s, %s, %s, %s, %s)", data)
        got = cur.execute(f"SELECT {names} FROM via_copy ORDER BY k").fetchall()
        want = cur.execute(f"SELECT {names} FROM via_insert ORDER BY k").fetchall()
    assert len(got) == len(data)
    assert got == want
    # and the values are the ones sent, not merely equally mangled
    assert [r[0] for r in got[: len(NASTY)]] == NASTY
    assert got[1][5] == [NASTY[1], "x", None, "NULL", ""]
    assert got[len(NASTY)][:6] == (None,) * 6


def test_empty_input_is_empty_arrays() -> None:
    assert copytext.text_columns([], 2) == ["{}", "{}"]
    assert copytext.columns([], 1) == ["{}"]


@pytest.mark.parametrize("value", [1.5, b"bytes", [1.5], [True]])
def test_unsupported_values_raise_naming_the_type_not_the_value(value: Any) -> None:
    with pytest.raises(TypeError) as err:
        copytext.text_columns([("ok", value)], 2)
    assert "unsupported" in str(err.value)
    assert repr(value) not in str(err.value)


def test_columns_as_arrays_unnest_to_the_same_rows(conn: psycopg.Connection[Any]) -> None:
    """What _upsert_columns sends: each column one array literal, unnested back into rows."""
    when = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    data = [
        (s, k - 2**62 if k % 2 else 2**63 - 1, 10**30 + k, None if k == 3 else when + timedelta(days=k))
        for k, s in enumerate(NASTY)
    ]
    data.append((None, None, None, None))
    got = conn.execute(
        "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::numeric[], %s::timestamptz[])",
        copytext.columns(data, 4),
    ).fetchall()
    assert got == data


def test_shared_and_distinct_objects_encode_alike() -> None:
    """Rows sharing one list / one jsonb map (as the writer's rows do) encode like copies."""
    tags, prov = ["a", 'b"c'], {"k": "v\t"}
    shared = [(tags, Jsonb(prov), tags) for _ in range(3)]
    copies = [(list(tags), Jsonb(dict(prov)), list(tags)) for _ in range(3)]
    assert copytext.text_columns(shared, 3) == copytext.text_columns(copies, 3)
    assert copytext.text_columns(shared, 3)[0].count('"{\\"a\\",\\"b\\\\\\"c\\"}"') == 3


def test_naive_times_are_utc_and_one_object_may_fill_two_kinds_of_column(
    conn: psycopg.Connection[Any],
) -> None:
    """A naive time is UTC (as the writer reads it); a list that is text[] in one column
    and jsonb in another is encoded for each (the reuse keys on both)."""
    naive, aware = datetime(2030, 1, 1, 12, 0), datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    tags = ["a", "b"]
    got = conn.execute(
        "SELECT ts::timestamptz, a::text[], j::jsonb FROM unnest(%s::text[], %s::text[], %s::text[]) "
        "AS u(ts, a, j)",
        copytext.text_columns([(naive, tags, Jsonb(tags)), (aware, tags, Jsonb(tags))], 3),
    ).fetchall()
    arrays = conn.execute(
        "SELECT * FROM unnest(%s::timestamptz[])", copytext.columns([(naive,), (aware,)], 1)
    ).fetchall()
    assert got == [(aware, tags, tags), (aware, tags, tags)]
    assert arrays == [(aware,), (aware,)]


# list elements as the fast paths see them: bare tokens, plain text, and everything that
# must fall back to the quoted, escaped form
LIST_CASES = [
    ["10.0.0.1/32", "fd00::1/128"],  # bare tokens
    ["conf", "kernel", "wgrest"],
    ["# Name = peer one"],  # plain text with blanks: quoted inside, no escapes
    ['quo"te'],
    ["back\\slash"],
    ["com,ma"],
    ["{brace}", "}"],
    [" blank", "tab\t", "new\nline"],
    ["null"],
    ["NuLl", "x"],
    ["ünïcode ✓", "ß"],
    [""],
    ["", "x"],
    ["a", None],
    [],
]


def test_every_list_element_round_trips_exactly(conn: psycopg.Connection[Any]) -> None:
    """Each list, whichever path encodes it, comes back from PostgreSQL as sent."""
    rows = [(k, value) for k, value in enumerate(LIST_CASES)]
    got = conn.execute(
        "SELECT a::text[] FROM unnest(%s::text[], %s::text[]) AS u(k, a) ORDER BY k::int",
        copytext.text_columns(rows, 2),
    ).fetchall()
    assert [r[0] for r in got] == LIST_CASES
    # tuples (how row values hold lists) encode as lists do
    assert copytext.text_columns([(tuple(v),) for v in LIST_CASES], 1) == copytext.text_columns(
        [(v,) for v in LIST_CASES], 1
    )


@pytest.mark.parametrize("value", [*NASTY, 'only "quotes"', "\\", "{}", "ünïcode"])
def test_a_text_column_needing_escapes_round_trips(conn: psycopg.Connection[Any], value: str) -> None:
    """One element needing escapes among plain ones: the column is escaped, exactly."""
    column = ["plain", value, None, "k" * 44]
    cols = copytext.text_columns([(v,) for v in column], 1)
    got = conn.execute("SELECT * FROM unnest(%s::text[])", cols).fetchall()
    assert [r[0] for r in got] == column
    typed = conn.execute("SELECT * FROM unnest(%s::text[])", copytext.columns([(v,) for v in column], 1))
    assert [r[0] for r in typed.fetchall()] == column


@pytest.mark.parametrize("value", ["secret\x00value", ["secret\x00"]])
def test_a_nul_is_refused_and_nothing_is_stored(conn: psycopg.Connection[Any], value: Any) -> None:
    """PostgreSQL text cannot hold NUL: the write fails as a whole, with an error that
    names the problem and not the value."""
    conn.execute("CREATE TEMP TABLE nul_target (t text, a text[])")
    conn.commit()
    row = (value, None) if isinstance(value, str) else (None, value)
    with pytest.raises(psycopg.DataError) as err:
        conn.execute(
            "INSERT INTO nul_target SELECT t, a::text[] FROM unnest(%s::text[], %s::text[]) AS u(t, a)",
            copytext.text_columns([row, ("ok", ["ok"])], 2),
        )
    assert "NUL" in str(err.value) and "secret" not in str(err.value)
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM nul_target").fetchone() == (0,)
