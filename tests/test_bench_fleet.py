"""The fleet benchmark (issue 14 item 2): its replay writes what the real writer writes,
and its tiny variant runs end to end in CI with every key of its JSON.

No speed is asserted (that lives in ``make bench-fleet``); what is asserted is that
the generator's pre-built cycles are the writer's own: a replayed host ends up with
the same rows as the template host the real ``store.write_cycle`` wrote.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.beds import unavailable
from tests.beds.pgbouncer import PgBouncer
from tests.beds.pgbouncer import missing_reason as pgbouncer_missing
from tests.beds.postgres import PgCluster, binaries_missing

pytestmark = [pytest.mark.postgres, pytest.mark.pgbouncer]

PEERS = 40


def _rows(conn: psycopg.Connection[Any], sql: str, host: str) -> list[tuple[Any, ...]]:
    return sorted(conn.execute(sql, (host,)).fetchall())


@pytest.fixture(scope="module")
def replayed(pg_cluster: PgCluster, pgbouncer: PgBouncer) -> tuple[str, Any]:
    """A template recorded through the real writer, then 2 hosts' first and one steady cycle
    replayed through pgbouncer by the generator's driver (in this process)."""
    from tests.bench.fleet_gen import Conn, Driver, _saturate
    from tests.bench.fleet_record import record
    from wgsyncd import store

    dsn, owner = pg_cluster.create_owned_database()
    with psycopg.connect(dsn) as conn:
        store.migrate(conn)
    pgbouncer.add_user(owner)
    rec = record(dsn, PEERS, tempfile.mkdtemp(prefix="wgs-fleet-", dir="/tmp"))
    routed = pgbouncer.route(dsn).encode()
    drv = Driver(rec, {h: Conn(h, routed) for h in (0, 1)})
    _saturate(drv, {"hosts": [0, 1], "inflight": 2, "phase": "populate"})
    _saturate(drv, {"hosts": [0, 1], "inflight": 2, "phase": "capacity", "count": 2, "k0": 3})
    assert not drv.errors, drv.errors
    for c in drv.conns.values():
        c.pg.finish()
    return dsn, drv


def test_replayed_host_has_the_template_rows(replayed: tuple[str, Any]) -> None:
    from tests.bench.fleet_record import TEMPLATE_HOST

    dsn, drv = replayed
    assert [r[1] for r in drv.out] == ["first", "first", "steady", "steady"]
    with psycopg.connect(dsn) as conn:
        for table, cols in (
            ("interfaces", "name, row_hash, version"),
            ("peers", "interface, public_key, row_hash, version, removed_at IS NULL"),
            ("server_keys", "interface, public_key, fingerprint"),
            ("config_versions", "version, content_sha256, signature"),
        ):
            sql = f"SELECT {cols} FROM {table} WHERE host_id = %s"
            template = _rows(conn, sql, TEMPLATE_HOST)
            assert template, table
            for host in ("fleet-00000", "fleet-00001"):
                assert _rows(conn, sql, host) == template, (table, host)
        for host in ("fleet-00000", "fleet-00001"):
            stats = conn.execute("SELECT count(*) FROM peer_stats WHERE host_id = %s", (host,)).fetchone()
            assert stats == (PEERS,)
            # the first sync's counters of every peer, then 10% of the peers moved once
            traffic = conn.execute("SELECT count(*) FROM peer_traffic WHERE host_id = %s", (host,)).fetchone()
            assert traffic == (PEERS + PEERS // 10,)
            status = _rows(conn, "SELECT status, peers FROM sync_status WHERE host_id = %s", host)
            assert status == [("ok", PEERS), ("ok", PEERS)]
            hostname = conn.execute("SELECT hostname FROM hosts WHERE host_id = %s", (host,)).fetchone()
            assert hostname == (f"{host}.example",)


def test_a_failed_replayed_cycle_is_reported_and_rolled_back(
    pgbouncer: PgBouncer, replayed: tuple[str, Any]
) -> None:
    """A statement PostgreSQL refuses mid-cycle: the cycle ends in ROLLBACK, is reported with
    its host and the server's message, nothing of it is kept, and the host's next cycle works."""
    import dataclasses

    from tests.bench.fleet_gen import Conn, Driver, _saturate
    from tests.bench.fleet_record import Statement

    dsn, drv = replayed
    bad = [list(s) for s in drv.rec.steady]
    for stmts in bad:
        stmts.insert(3, Statement(b"SELECT 1 / 0", []))  # after begin_cycle, inside the transaction
    rec = dataclasses.replace(drv.rec, steady=bad)
    failing = Driver(rec, {0: Conn(0, pgbouncer.route(dsn).encode())})
    count = "SELECT count(*) FROM sync_status WHERE host_id = 'fleet-00000'"
    with psycopg.connect(dsn) as conn:
        before = conn.execute(count).fetchone()
    _saturate(failing, {"hosts": [0], "inflight": 1, "phase": "capacity", "count": 1, "k0": 5})
    assert len(failing.errors) == 1 and failing.errors[0].startswith("fleet-00000: ")
    assert "division by zero" in failing.errors[0]
    assert [r[-1] for r in failing.out] == [False]
    failing.kinds["steady"] = failing.kinds["idle"]  # the host's next cycle, without the bad statement
    _saturate(failing, {"hosts": [0], "inflight": 1, "phase": "capacity", "count": 1, "k0": 6})
    assert [r[-1] for r in failing.out] == [False, True] and len(failing.errors) == 1
    failing.conns[0].pg.finish()
    with psycopg.connect(dsn) as conn:
        after = conn.execute(count).fetchone()
    assert after[0] == before[0] + 1  # type: ignore[index]  # the idle cycle's row only


TINY = {"hosts": 6, "peers": 40, "interval": 2, "probe": 1, "steps": 1, "pool": 2, "workers": 2}


def test_tiny_fleet_run(tmp_path: Path) -> None:
    """The CI variant of ``make bench-fleet``: 6 hosts x 40 peers, 2 s interval, one paced run."""
    reason = binaries_missing() or pgbouncer_missing()
    if reason:
        unavailable("fleet benchmark", reason)
    from tests.bench.fleet import main, table

    assert main([f"--{k}={v}" for k, v in TINY.items()] + [f"--out={tmp_path / 'fleet.json'}"]) == 0
    result = json.loads((tmp_path / "fleet.json").read_text())
    fleet = result["fleet"]
    assert {"started_at", "command", "machine", "fleet", "elapsed_s"} <= set(result)
    assert fleet["populate"]["cycles"] == 6
    assert fleet["capacity"]["cycles"] >= 6
    (paced,) = fleet["paced_steps"]
    assert paced["cycles"] == 6 and paced["hosts"] == 6
    assert paced["required_cycles_per_s"] == pytest.approx(3.0)
    for p in (fleet["populate"], fleet["capacity"], paced):
        assert 0 < p["latency_p50_s"] <= p["latency_p99_s"] < 60, p["phase"]
        assert p["wal_bytes_per_cycle"] > 0 and p["db_cpu_s"] >= 0, p["phase"]
    # a first sync writes every row; a steady cycle only 10% of the counters
    assert fleet["populate"]["wal_bytes_per_cycle"] > fleet["capacity"]["wal_bytes_per_cycle"]
    assert set(fleet["sizes_after"]) >= {"peers", "peer_stats", "peer_traffic", "sync_status"}
    # the steady cycles added traffic rows: the index shows it (the heap may not: PostgreSQL
    # extends a table by many pages at once when inserts contend, as 6 first syncs do)
    grown, start = fleet["sizes_after"]["peer_traffic"], fleet["sizes_after_populate"]["peer_traffic"]
    assert grown["table"] >= start["table"] and grown["index"] > start["index"]
    day = fleet["day"]
    assert day["total_bytes_at_90_day_retention"] > day["total_bytes_after_day"] > day["fixed_bytes"] > 0
    assert fleet["statements_per_cycle"]["steady"] >= 5
    text = table(fleet)
    assert "keeps up at 6 hosts" in text and "simulated day" in text and "WAL per cycle" in text
