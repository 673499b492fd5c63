"""What the fleet benchmark reads from PostgreSQL: table and index sizes, the settings in
force, and the size after a simulated day extrapolated from the measured steady cycles."""

from __future__ import annotations

import time
from typing import Any

TABLES = (
    "hosts", "interfaces", "peers", "server_keys", "peer_stats", "peer_traffic", "sync_status",
    "config_versions", "config_secrets", "host_signing_keys",
)  # fmt: skip
APPEND_ONLY = ("peer_traffic", "sync_status")  # what grows every cycle (pruned after history_days)
# days each keeps a row per cycle by default (traffic_detail_hours 24; status: spool 7 days + 1)
DETAIL_DAYS = {"peer_traffic": 1, "sync_status": 8}


def sizes(dsn: str) -> dict[str, dict[str, Any]]:
    """Table (heap + toast) and index bytes of every wgsyncd table, and each index's own."""
    import psycopg

    out: dict[str, dict[str, Any]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for t in TABLES:
            total, idx = conn.execute(
                "SELECT pg_total_relation_size(%s::regclass), pg_indexes_size(%s::regclass)", (t, t)
            ).fetchone()  # type: ignore[misc]
            each = conn.execute(
                "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index "
                "WHERE indrelid = %s::regclass ORDER BY 1",
                (t,),
            ).fetchall()
            out[t] = {"table": int(total) - int(idx), "index": int(idx), "indexes": dict(each)}
    return out


def apply_settings(cluster: Any, pairs: list[str]) -> dict[str, str]:
    """``name=value`` server settings (ALTER SYSTEM + reload; reload-level ones only), and the
    values in force after, read back, with the WAL and checkpoint ones that matter here."""
    import psycopg

    for pair in pairs:
        name, _, value = pair.partition("=")
        if not name.replace("_", "").isalpha():
            raise SystemExit(f"--pg-set: not a setting name: {name!r}")
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("ALTER SYSTEM SET {} = {}").format(
                psycopg.sql.Identifier(name), psycopg.sql.Literal(value)))  # fmt: skip
    names = ["max_wal_size", "checkpoint_timeout", "wal_compression", "shared_buffers", "synchronous_commit"]
    names += [p.partition("=")[0] for p in pairs if p.partition("=")[0] not in names]
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    wanted = dict(p.partition("=")[::2] for p in pairs)
    deadline = time.monotonic() + 10.0
    while True:  # the reload is asynchronous: read back in new sessions until it shows
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            got = {n: str(conn.execute(f"SELECT current_setting('{n}')").fetchone()[0]) for n in names}  # type: ignore[index]
        if all(got[n] == v for n, v in wanted.items()) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)  # polling a condition with a deadline


def simulated_day(res: dict[str, Any], hosts: int) -> dict[str, Any]:
    """Size after a day of 1,440 cycles per host, from the bytes the measured steady cycles added.

    The update-in-place tables (peer_stats, hosts) keep one row per peer/host: their
    size after the run stands (vacuum reuses the space of the old versions). The
    append-only ones (peer_traffic, sync_status) grow by the measured bytes per cycle,
    until retention (history_days, 90) prunes them: their size after 90 days is the
    steady state.
    """
    steady_cycles = res["capacity"]["cycles"] + sum(s["cycles"] for s in res["paced_steps"])
    before, after = res["sizes_after_populate"], res["sizes_after"]
    per_cycle = {
        t: (after[t]["table"] + after[t]["index"] - before[t]["table"] - before[t]["index"]) / steady_cycles
        for t in APPEND_ONLY
    }
    fixed = sum(v["table"] + v["index"] for t, v in after.items() if t not in APPEND_ONLY)
    per_day = {t: b * (86400 / res["interval_s"]) * hosts for t, b in per_cycle.items()}
    day_append = sum(per_day.values())
    # schema 10: past its detail window a table keeps one row an hour per peer (traffic)
    # or per host (status) instead of one a cycle; tests/test_store_rollup.py
    hourly = res["interval_s"] / 3600
    at_90 = fixed + sum(per_day[t] * (DETAIL_DAYS[t] + (90 - DETAIL_DAYS[t]) * hourly) for t in APPEND_ONLY)
    return {
        "how": "append-only tables: measured bytes per steady cycle x cycles a day (86,400 s / interval) "
        "x hosts; the others: their size after the run; at 90 days: each append-only table's "
        "per-cycle rows for its detail window (traffic 1 day, status 8), one row an hour after",
        "steady_cycles_measured": steady_cycles,
        "append_bytes_per_cycle": per_cycle,
        "fixed_bytes": fixed,
        "append_bytes_per_day": day_append,
        "total_bytes_after_day": fixed + day_append,
        "total_bytes_at_90_day_retention": at_90,
        "total_bytes_at_90_day_retention_per_cycle_rows": fixed + 90 * day_append,  # before schema 10
    }
