"""What one compromised host can write must not break the operator's fleet views (0007).

Each poison value is planted as a host role (tests/beds/roles.py), through the grants
and writer functions a host really has: it is refused. Then the same poison is put in
by the owner past the constraints (a database restored from an old dump): every view
still answers for the operator, and the poison is ignored.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.beds.fleet_world import World
from wgsyncd import fleet

pytestmark = pytest.mark.postgres

BIG = 2**63 - 1


def _status(conn: psycopg.Connection[Any], host_id: str, when: str) -> None:
    conn.execute(
        "INSERT INTO sync_status (host_id, sync_id, started_at, finished_at, status, agent_version) "
        "VALUES (%s, %s, %s, %s, 'ok', 'test')",
        (host_id, uuid.uuid4(), when, when),
    )


def _stats(conn: psycopg.Connection[Any], host_id: str, handshake: str, rx: int, tx: int) -> None:
    """One peer_stats row and one peer_traffic row through the host's writer function."""
    conn.execute(
        "SELECT wgsyncd_put_stats(%s, ARRAY['wg0'], ARRAY[%s], ARRAY[%s::timestamptz], ARRAY[0::bigint], "
        "ARRAY[0::bigint], ARRAY[0::numeric], ARRAY[0::numeric], ARRAY[now()], ARRAY[NULL::text], "
        "ARRAY['wg0'], ARRAY[%s], ARRAY[now()], ARRAY[%s::bigint], ARRAY[%s::bigint])",
        (host_id, "poison-key", handshake, "poison-key", rx, tx),
    )


def _every_view(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Row counts of every fleet question, as the operator asks them."""
    return {
        "hosts": len(fleet.hosts(conn)),
        "peers": len(fleet.peers(conn)),
        "stale": len(fleet.stale(conn, 7).peers),
        "conflicts": len(fleet.conflicts(conn)),
        "top": len(fleet.top(conn, fleet.parse_since("7d"), limit=100)),
    }


@pytest.mark.parametrize(
    "plant",
    [
        pytest.param(lambda c, h: _status(c, h, "infinity"), id="sync_status-infinity"),
        pytest.param(lambda c, h: _status(c, h, "-infinity"), id="sync_status-minus-infinity"),
        pytest.param(lambda c, h: _stats(c, h, "-infinity", 1, 1), id="handshake-minus-infinity"),
        pytest.param(lambda c, h: _stats(c, h, "infinity", 1, 1), id="handshake-infinity"),
        pytest.param(lambda c, h: _stats(c, h, "2026-01-01", BIG, 1), id="delta-2^63-1"),
        pytest.param(lambda c, h: _stats(c, h, "2026-01-01", -5, 1), id="delta-negative"),
    ],
)
def test_a_host_cannot_store_a_value_that_breaks_the_views(world: World, plant: Any) -> None:
    f = world.fleet
    with f.connect(f.operator) as conn:
        before = _every_view(conn)
    with psycopg.connect(f.dsn(f.role_a)) as conn, pytest.raises(psycopg.errors.CheckViolation):
        plant(conn, f.host_a)
    with f.connect(f.operator) as conn:
        assert _every_view(conn) == before


def test_poison_already_in_the_tables_is_ignored_by_every_view(world: World) -> None:
    """Past the constraints (an old dump restored): the views skip or blank it and answer."""
    f = world.fleet
    with f.connect(f.operator) as conn:
        before = {r["host_id"]: r for r in fleet.hosts(conn)}
        counts = _every_view(conn)
    with psycopg.connect(f.dsn(f.owner)) as conn:
        for table, name in (
            ("sync_status", "sync_status_finite_times"),
            ("peer_stats", "peer_stats_finite_times"),
            ("peer_traffic", "peer_traffic_delta_range"),
        ):
            conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
        _status(conn, f.host_a, "infinity")
        conn.execute("UPDATE peer_stats SET latest_handshake = '-infinity' WHERE host_id = %s", (f.host_a,))
        conn.execute(
            "INSERT INTO peer_traffic (host_id, interface, public_key, observed_at, rx_delta, tx_delta) "
            "SELECT host_id, interface, public_key, now(), %s, 1 FROM peers WHERE host_id = %s LIMIT 1",
            (2**62, f.host_a),
        )
        conn.execute(
            "INSERT INTO peer_traffic (host_id, interface, public_key, observed_at, rx_delta, tx_delta) "
            "SELECT host_id, interface, public_key, now() - interval '1 s', %s, %s FROM peers "
            "WHERE host_id = %s LIMIT 1",
            (2**62, 2**62, f.host_a),
        )
    with f.connect(f.operator) as conn:
        hosts = {r["host_id"]: r for r in fleet.hosts(conn)}
        assert hosts[f.host_a]["last_ok_at"] == before[f.host_a]["last_ok_at"]  # not "ok forever"
        peers = [p for p in fleet.peers(conn) if p["host_id"] == f.host_a]
        assert all(p["latest_handshake"] is None and p["handshake_age_s"] is None for p in peers)
        top = fleet.top(conn, fleet.parse_since("7d"))
        assert top[0]["total_bytes"] >= 3 * 2**62  # summed as numeric, no bigint overflow
        assert _every_view(conn)["hosts"] == counts["hosts"]


def test_a_host_cannot_store_a_huge_peer_name_or_hostname(world: World) -> None:
    f = world.fleet
    with psycopg.connect(f.dsn(f.role_a)) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "SELECT wgsyncd_begin_cycle(%s, %s, 'test', %s, NULL)",
                (f.host_a, "h" * 100_000, uuid.uuid4()),
            )
        conn.rollback()
        cols = 15
        arrays = ", ".join(["%s::text[]"] * cols)
        values: list[Any] = [["wg0"], ["k" * 44], ["n" * 100_000]] + [[None]] * (cols - 3)
        values[12] = ["{}"]
        values[13] = ["{}"]
        values[14] = ["hash"]
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(f"SELECT wgsyncd_put_peers(%s, {arrays})", (f.host_a, *values))


def _put_peers(conn: psycopg.Connection[Any], host_id: str, peers: list[tuple[str, str, str]]) -> None:
    """(public key, name, allowed IPs as a text[] literal) on wg0, through the host's writer function."""
    n = len(peers)
    cols: list[list[Any]] = [["wg0"] * n, [p[0] for p in peers], [p[1] for p in peers], [None] * n]
    cols += [[p[2] for p in peers]] + [[None] * n for _ in range(7)]
    cols += [["{}"] * n, ["{}"] * n, ["h"] * n]
    arrays = ", ".join(["%s::text[]"] * len(cols))
    conn.execute(f"SELECT wgsyncd_put_peers(%s, {arrays})", (host_id, *cols))


def test_conflicts_stay_linear_when_a_host_stores_thousands_of_default_routes(world: World) -> None:
    """3,000 peers with 0.0.0.0/0 were 4.5M pair rows (0006); now one row per peer, with
    the count, and the real cross-host conflicts of the bed are still all there."""
    f = world.fleet
    n = 3000
    with psycopg.connect(f.dsn(f.role_a)) as conn:
        _put_peers(
            conn, f.host_a, [(f"poison{i:05d}" + "A" * 34 + "=", f"p{i}", "{0.0.0.0/0}") for i in range(n)]
        )
    with psycopg.connect(f.dsn(f.owner)) as conn:  # every other IPv4 value (any lies in 0.0.0.0/0)
        (ipv4_elsewhere,) = conn.execute(
            "SELECT count(DISTINCT (host_id, interface, public_key, wgsyncd_inet(ip))) FROM peers, "
            "unnest(allowed_ips) ip WHERE removed_at IS NULL AND disabled IS NOT TRUE "
            "AND family(wgsyncd_inet(ip)) = 4 AND public_key NOT LIKE 'poison%'"
        ).fetchone()
    with f.connect(f.operator) as conn:
        rows = fleet.conflicts(conn, limit=100_000)
        capped = fleet.conflicts(conn, limit=50)
    poison = [r for r in rows if r["value_a"] == "0.0.0.0/0"]
    # every default route but the last (b: the next holder), and every other IPv4 value
    # in the bed contained in 0.0.0.0/0 (b: one of the poison peers)
    assert len(poison) == n - 1 and {r["overlap_count"] for r in poison} == {n - 1 + ipv4_elsewhere}
    assert ipv4_elsewhere > 0
    assert len(rows) < n + 20
    fleetwide = {
        (r["host_a"], r["value_a"], r["host_b"], r["value_b"]) for r in rows if r["scope"] == "fleet"
    }
    assert (f.host_b, "10.9.0.7/32", f.host_a, "10.9.0.0/24") in fleetwide  # nearest container, not 0/0
    assert (f.host_b, "10.30.0.9/32", world.host_c, "10.30.0.0/24") in fleetwide
    assert len(capped) == 50
