"""The fleet questions (migration 0006 views, wgsyncd/fleet.py) on a real PostgreSQL with real roles.

Three hosts write through the real store as their own roles (tests/beds/fleet_world.py
says what each holds and so what each answer must be). The reader asks every question
and gets every host; a host role may not ask (0007).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from tests.beds.fleet_world import HOSTILE_NAME, World, key
from tests.beds.pgbouncer import PgBouncer
from wgsyncd import fleet, store
from wgsyncd.config import DatabaseConfig
from wgsyncd.store.db import StoreError
from wgsyncd.store.migrate import MIGRATIONS_DIR

pytestmark = pytest.mark.postgres


def conflict_set(rows: list[dict]) -> set[tuple]:
    """Each conflict as (kind, scope, host a, name a, value a, host b, name b, value b)."""
    return {
        (
            r["kind"],
            r["scope"],
            r["host_a"],
            r["name_a"],
            r["value_a"],
            r["host_b"],
            r["name_b"],
            r["value_b"],
        )
        for r in rows
    }


def expected_conflicts(w: World) -> set[tuple]:
    """What the world holds: two duplicate keys and three overlaps (see the bed's docstring)."""
    a, b, c = w.fleet.host_a, w.fleet.host_b, w.host_c
    return {
        ("public_key", "host", a, "alice", key("alice"), a, "alice-wg1", key("alice")),
        ("public_key", "fleet", a, "phone", key("phone"), b, "phone-b", key("phone")),
        ("allowed_ip", "interface", a, "alice-wg1", "10.2.0.2/32", a, "wide", "10.2.0.0/16"),
        ("allowed_ip", "fleet", b, "laptop", "10.9.0.7/32", a, "sitenet", "10.9.0.0/24"),
        ("allowed_ip", "fleet", b, "junk", "10.30.0.9/32", c, "gw", "10.30.0.0/24"),
    }


def test_every_fleet_view_is_security_invoker_and_only_selectable(world: World) -> None:
    """Walked from the catalog: a view added later without security_invoker (it would read
    as its owner, past row-level security) or with more than SELECT is caught."""
    f = world.fleet
    with psycopg.connect(f.dsn(f.owner), autocommit=True) as c:
        views = c.execute(
            "SELECT relname, coalesce(reloptions, '{}') FROM pg_class "
            "WHERE relnamespace = current_schema()::regnamespace AND relkind = 'v' ORDER BY 1"
        ).fetchall()
        assert [v[0] for v in views] == [
            "fleet_conflicts",
            "fleet_hosts",
            "fleet_keys",
            "fleet_peers",
            "fleet_traffic",
        ]
        for name, options in views:
            assert "security_invoker=true" in options, name
            for group in ("wgsyncd_host", "wgsyncd_operator", "wgsyncd_reader"):
                assert c.execute(
                    "SELECT has_table_privilege(%s, %s, 'SELECT')", (group, name)
                ).fetchone() == (group != "wgsyncd_host",)  # agents never ask fleet questions (0007)
                for priv in ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"):
                    held = c.execute("SELECT has_table_privilege(%s, %s, %s)", (group, name, priv)).fetchone()
                    assert held == (False,), f"{group} holds {priv} on {name}"
            public = c.execute("SELECT has_table_privilege('public', %s, 'SELECT')", (name,)).fetchone()
            assert public == (False,), f"PUBLIC may read {name}"


def test_hosts_stopped_syncing_when_the_last_ok_cycle_is_older_than_three_intervals(world: World) -> None:
    f = world.fleet
    with f.connect(f.reader) as conn:
        rows = {r["host_id"]: r for r in fleet.hosts(conn)}
    assert set(rows) == {f.host_a, f.host_b, world.host_c}
    a, b, c = rows[f.host_a], rows[f.host_b], rows[world.host_c]
    assert (a["state"], a["interval_s"], a["interval_measured"]) == ("ok", 600, True)
    assert (b["state"], b["interval_s"], b["interval_measured"]) == (
        "ok",
        300,
        False,
    )  # one cycle: the default
    # C still runs (a failed cycle now) but its last ok one ended two hours ago, 3 x 60 s is long past
    assert (c["state"], c["interval_s"], c["last_status"]) == ("stopped", 60, "failed")
    assert (
        c["last_ok_at"] < world.now - timedelta(hours=1) and c["last_message"] == "database: connect failed"
    )
    assert (a["interfaces"], a["peers"], b["peers"], c["peers"]) == (2, 7, 5, 1)
    assert next(iter(rows)) == world.host_c  # stopped hosts first


def test_find_a_public_key_on_every_host_and_interface_that_holds_it(world: World) -> None:
    f = world.fleet
    with psycopg.connect(f.dsn(f.owner)) as c:
        q = "SELECT public_key FROM interfaces WHERE host_id = %s AND name = 'wg1'"
        iface_key = c.execute(q, (f.host_a,)).fetchone()[0]
    with f.connect(f.reader) as conn:
        phone = fleet.find(conn, key("phone"))
        alice = fleet.find(conn, f"  {key('alice')}\n")  # pasted with blanks around it
        iface = fleet.find(conn, iface_key)
        nowhere = fleet.find(conn, key("nobody"))
    assert [(r["host_id"], r["hostname"], r["interface"], r["name"], r["kind"]) for r in phone] == [
        (f.host_a, "vpn-a", "wg0", "phone", "peer"),
        (f.host_b, "vpn-b", "wg0", "phone-b", "peer"),
    ]
    assert sorted(phone[0]["sources"]) == ["conf", "kernel"] and phone[0]["addresses"] == ["10.1.0.3/32"]
    assert [(r["interface"], r["name"]) for r in alice] == [("wg0", "alice"), ("wg1", "alice-wg1")]
    assert [(r["host_id"], r["interface"], r["kind"]) for r in iface] == [(f.host_a, "wg1", "interface")]
    assert nowhere == []


@pytest.mark.parametrize("bad", ["", "abc", key("x")[:-1], key("x")[:-2] + "B=", "'; DROP TABLE peers; --"])
def test_a_malformed_key_is_refused_in_one_line_before_any_query(bad: str) -> None:
    with pytest.raises(fleet.FleetInputError, match=r"^KEY: not a (canonical )?base64 WireGuard key") as exc:
        fleet.check_key(bad)
    assert "\n" not in str(exc.value)


def test_peers_without_a_handshake_for_n_days_never_handshaked_counted_apart(world: World) -> None:
    f = world.fleet
    with f.connect(f.reader) as conn:
        week = fleet.stale(conn, 7)
        two = fleet.stale(conn, 2)
        every = fleet.peers(conn)
    names = [(r["host_id"], r["name"]) for r in week.peers]
    # never first, then the oldest; the disabled peer "off" (never either) is left out
    assert names == [(f.host_a, "fresh"), (f.host_b, "phone-b"), (f.host_a, "sitenet")]
    assert (week.never, len(week.peers)) == (2, 3)
    assert week.summary() == "3 peers without a handshake for 7 days (2 never had one, 1 went quiet)"
    assert [r["name"] for r in two.peers] == ["fresh", "phone-b", "sitenet", "laptop"] and two.never == 2
    assert week.peers[2]["handshake_age_s"] == pytest.approx(30 * 86400, abs=600)
    # the peer list: every current peer with its totals (alice: 1000 + 50,000 received)
    alice = next(r for r in every if r["name"] == "alice")
    assert (alice["rx_bytes"], alice["tx_bytes"], alice["disabled"]) == (51_000, 3_000, False)
    assert len(every) == 13 and {r["host_id"] for r in every} == {f.host_a, f.host_b, world.host_c}


def test_conflicts_same_key_and_overlapping_allowed_ips_same_host_and_across_hosts(world: World) -> None:
    f = world.fleet
    with f.connect(f.reader) as conn:
        rows = fleet.conflicts(conn)
    # the disabled peer "off" (10.9.0.7/32 too) is no conflict; B's junk allowed IP is
    # skipped, not an error for every reader, and its valid one is still compared
    assert conflict_set(rows) == expected_conflicts(world)
    assert len(rows) == 5


def test_top_talkers_since_a_time(world: World) -> None:
    f = world.fleet
    with f.connect(f.reader) as conn:
        day = fleet.top(conn, fleet.parse_since("24h"))
        week = fleet.top(conn, fleet.parse_since("7d"), limit=2)
    assert [(r["name"], r["rx_bytes"], r["tx_bytes"], r["total_bytes"]) for r in day[:2]] == [
        ("alice", 51_000, 3_000, 54_000),
        ("phone", 300, 400, 700),
    ]
    assert "laptop" not in [r["name"] for r in day]  # its traffic is 3 days old
    assert [(r["name"], r["total_bytes"]) for r in week] == [("alice", 54_000), ("laptop", 16_000)]


def test_a_host_role_is_refused_every_view_and_the_conflict_function(world: World) -> None:
    """Least privilege (0007): agents never ask fleet questions, so a host role may not."""
    f = world.fleet
    with f.connect(f.role_b) as conn:
        for question in (
            fleet.hosts,
            fleet.peers,
            fleet.conflicts,
            lambda c: fleet.find(c, key("phone")),
            lambda c: fleet.top(c, fleet.parse_since("7d")),
        ):
            with pytest.raises(StoreError, match="permission denied"):
                question(conn)
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("SELECT count(*) FROM wgsyncd_fleet_conflicts()")
    with f.connect(f.operator) as conn:
        assert conflict_set(fleet.conflicts(conn)) == expected_conflicts(world)
        assert len(fleet.hosts(conn)) == 3


def test_questions_are_read_only_transactions(world: World) -> None:
    """Even as the owner (who may write), a fleet read cannot write: the transaction is READ ONLY."""
    f = world.fleet
    with f.connect(f.owner) as conn:
        with pytest.raises(StoreError, match="read-only transaction"):
            fleet._read(conn, "probe", "DELETE FROM peers")
        assert len(fleet.peers(conn)) == 13


def test_a_schema_without_the_views_is_one_line_naming_the_fix(pg_cluster, tmp_path: Path) -> None:
    old = tmp_path / "migrations"
    old.mkdir()
    for p in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if p.name < "0006":
            (old / p.name).write_text(p.read_text())
    cfg = DatabaseConfig(dsn=pg_cluster.create_database(), connect_timeout=5.0, statement_timeout=20.0)
    with store.connect(cfg) as conn:
        store.migrate(conn, old)
        with pytest.raises(StoreError) as exc:
            fleet.hosts(conn)
    text = str(exc.value)
    assert "fleet views are missing" in text and "wgsyncd db migrate" in text and "\n" not in text


@pytest.mark.pgbouncer
def test_every_question_through_pgbouncer_in_transaction_mode(world: World, pgbouncer: PgBouncer) -> None:
    f = world.fleet
    pgbouncer.add_user(f.reader)
    cfg = DatabaseConfig(
        dsn=pgbouncer.dsn(f.dbname, user=f.reader), connect_timeout=5.0, statement_timeout=20.0
    )
    with store.connect(cfg) as conn:
        for _ in range(2):  # consecutive transactions land on different server connections
            assert len(fleet.hosts(conn)) == 3
            assert conflict_set(fleet.conflicts(conn)) == expected_conflicts(world)
            assert len(fleet.stale(conn, 7).peers) == 3
            assert [r["name"] for r in fleet.find(conn, key("hostile"))] == [HOSTILE_NAME]
            assert fleet.top(conn, fleet.parse_since("1h"))[0]["name"] == "alice"


def test_conflicts_work_inside_a_parallel_query(world: World) -> None:
    """The safe parse is a subtransaction, which a parallel query refuses: it must not be
    marked parallel safe (it was, and 100,000 peers got a parallel plan that failed)."""
    f = world.fleet
    with psycopg.connect(f.dsn(f.reader)) as c:
        c.execute("SELECT set_config('force_parallel_mode', 'on', true)")
        c.execute("SELECT set_config('parallel_setup_cost', '0', true)")
        rows = c.execute("SELECT count(*) FROM fleet_conflicts").fetchone()
        parsed = c.execute(
            "SELECT count(wgsyncd_inet(x)) FROM unnest(ARRAY['fd00::1', 'no', '10.0.0.1/33']) x"
        )
        assert rows == (5,) and parsed.fetchone() == (1,)
