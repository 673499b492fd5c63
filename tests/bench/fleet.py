"""``python -m tests.bench.fleet``: M hosts x P peers through pgbouncer into one durable PostgreSQL.

Issue 14 item 2 (10,000 hosts x 1,000 peers every 60 s = 167 cycles/s). What is real
and what is pre-built:
- real: PostgreSQL 15 with fsync on (every COMMIT waits for its WAL flush), a real
  pgbouncer 1.18 in transaction mode in front of it, one client connection per
  simulated host held open like a running agent's, and per cycle exactly the
  statements, parameters, protocol messages and round trips of the real
  ``store.write_cycle`` with a signer and a recovery key (the schema owner's
  SECURITY DEFINER functions, the sync_status INSERT, BEGIN/COMMIT);
- pre-built: those statements and parameter bytes, recorded once from the real
  writer for a template host (tests/bench/fleet_record.py); per cycle only host_id,
  sync_id and timestamps are swapped in (tests/bench/fleet_gen.py). Every host has
  the template's peer keys (rows differ by host_id, their leading key), and a
  replayed first version carries the template's signature (restore would refuse
  it; the database cannot tell, so its cost is the same).
- the connections log in as the schema owner, not one role per host: pgbouncer
  keeps one pool per (database, user), so 10,000 host roles would need 10,000
  pools (measured by tests/bench/fleet_roles.py; the README's fleet section).

Traffic mix: every cycle moves the counters of 10% of the host's peers (100 new
peer_stats values and 100 peer_traffic rows, no config change; ``--idle-percent``
makes that share of cycles idle instead). Phases: populate (each host's first sync,
as fast as the pool takes it), capacity (steady cycles back to back), then paced
runs of one interval each at stepped host counts until one keeps up.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.bench.fleet_db import apply_settings, simulated_day, sizes
from tests.bench.multihost import _pct, postgres_cpu_s, process_cpu_s


class Probe:
    """PostgreSQL CPU, pgbouncer CPU and the WAL position, read before and after a phase."""

    def __init__(self, cluster: Any, bouncer: Any, dsn: str) -> None:
        self.cluster, self.bouncer, self.dsn = cluster, bouncer, dsn

    def read(self) -> dict[str, Any]:
        """The counters now."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]  # type: ignore[index]
        return {
            "t": time.monotonic(),
            "db_cpu": postgres_cpu_s(self.cluster.data_dir),
            "pooler_cpu": process_cpu_s(self.bouncer.proc.pid),
            "lsn": lsn,
        }

    def wal_bytes(self, a: dict[str, Any], b: dict[str, Any]) -> int:
        """Bytes of WAL written between two readings."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (b["lsn"], a["lsn"])
            ).fetchone()
        return int(row[0])  # type: ignore[index]

    def wal_fpi_bytes(self, a: dict[str, Any], b: dict[str, Any]) -> int | None:
        """Of that WAL, the bytes that are full-page images (pg_walinspect reads the segments);
        None when they were recycled meanwhile (a long populate) or the extension is missing."""
        import psycopg

        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT coalesce(sum(fpi_size), 0) FROM pg_get_wal_stats(%s::pg_lsn, %s::pg_lsn)",
                    (a["lsn"], b["lsn"]),
                ).fetchone()
        except psycopg.Error:
            return None
        return int(row[0])  # type: ignore[index]


def _run(
    phase: str,
    probe: Probe,
    dsn: str,
    recording: Any,
    hosts: list[int],
    workers: int,
    before_go: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """Start the workers on a slice of ``hosts`` each; once all are connected, call
    ``before_go`` (if any), read the probe and let them go (paced: at ``start``, 1 s later);
    wait; merge their records."""
    from tests.bench.fleet_gen import run_worker

    ctx = mp.get_context("spawn")
    out, ready, go, start = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    procs = []
    for w in range(workers):
        args = dict(extra, phase=phase, dsn=dsn, recording=recording, hosts=hosts[w::workers])
        p = ctx.Process(target=run_worker, args=(args, out, ready, go, start), daemon=True)
        p.start()
        procs.append(p)
    for _ in procs:
        ready.get(timeout=600)
    if before_go is not None:
        before_go()
    got: dict[str, Any] = {"a": probe.read()}
    start.value = time.time() + 1.0
    go.set()
    results = [out.get(timeout=7200) for _ in procs]
    got["b"] = probe.read()
    for p in procs:
        p.join(timeout=60)
    errors = [e for r in results for e in r["errors"]]
    if errors:
        raise RuntimeError(f"fleet {phase}: {len(errors)} failed cycles, first: {errors[0]}")
    got.update(
        records=[x for r in results for x in r["records"]],
        gen_cpu=sum(r["cpu_s"] for r in results),
        start=start.value,
    )
    return got


def _summary(
    name: str, got: dict[str, Any], a: dict[str, Any], b: dict[str, Any], wal: int, window: float
) -> dict[str, Any]:
    """Rates over ``window`` seconds (the schedule for paced, else the busy time)."""
    recs = got["records"]
    lat = [end - start for _h, _k, _due, start, end, _ok in recs]
    n = len(recs)
    return {
        "phase": name,
        "cycles": n,
        "window_s": window,
        "cycles_per_s": n / window if window else 0.0,
        "latency_p50_s": _pct(lat, 0.5),
        "latency_p99_s": _pct(lat, 0.99),
        "db_cpu_s": b["db_cpu"] - a["db_cpu"],
        "db_cpu_cores": (b["db_cpu"] - a["db_cpu"]) / window if window else 0.0,
        "pooler_cpu_cores": (b["pooler_cpu"] - a["pooler_cpu"]) / window if window else 0.0,
        "generator_cpu_cores": got["gen_cpu"] / window if window else 0.0,
        "wal_bytes": wal,
        "wal_bytes_per_cycle": wal / n if n else 0.0,
        "db_cpu_ms_per_cycle": 1000 * (b["db_cpu"] - a["db_cpu"]) / n if n else 0.0,
    }


def _measured(name: str, probe: Probe, got: dict[str, Any], window: float | None = None) -> dict[str, Any]:
    """The summary of one finished phase; rates over ``window`` or the time cycles were running."""
    recs = got["records"]
    busy = max((r[4] for r in recs), default=0) - min((r[3] for r in recs), default=0)
    a, b = got["a"], got["b"]
    out = _summary(name, got, a, b, probe.wal_bytes(a, b), window or busy)
    fpi = probe.wal_fpi_bytes(a, b) if name != "populate" else None
    out["wal_fpi_share"] = fpi / out["wal_bytes"] if fpi is not None and out["wal_bytes"] else None
    return out


def paced(
    probe: Probe, dsn: str, rec: Any, m: int, interval: float, workers: int, idle_percent: int
) -> dict[str, Any]:
    """Hosts 0..m-1, each once per interval at its own offset, for one interval; keeps up?"""
    got = _run("paced", probe, dsn, rec, list(range(m)), workers, interval=interval, m=m,
               duration_s=interval, idle_percent=idle_percent, k0=10_000)  # fmt: skip
    recs = got["records"]
    last = max((r[4] for r in recs), default=got["start"])
    # rates over the schedule, or longer when the last cycles ended after it (a backlog)
    out = _measured("paced", probe, got, max(interval, last - got["start"]))
    late = [start_t - due for _h, _k, due, start_t, _e, _ok in recs]
    # each host holds its own connection, so a cycle "starts" on time and then waits in
    # pgbouncer's queue for a server connection: what counts is when it is done
    lag = [end - due for _h, _k, due, _s, end, _ok in recs]
    out["hosts"] = m
    out["required_cycles_per_s"] = m / interval
    out["late_max_s"] = max(late, default=0.0)
    out["done_after_slot_p50_s"] = _pct(lag, 0.5)
    out["done_after_slot_p99_s"] = _pct(lag, 0.99)
    out["done_after_slot_max_s"] = max(lag, default=0.0)
    # keeps up: every host's cycle ran and was committed within 10% of the interval of its
    # slot (a backlog that grows over the run shows as a growing lag)
    out["keeps_up"] = len(recs) == m and out["done_after_slot_max_s"] <= 0.1 * interval
    return out


def run_fleet(args: argparse.Namespace, log: Any = print) -> dict[str, Any]:
    """Start a durable PostgreSQL and pgbouncer, record, populate, probe, step; the JSON block."""
    import psycopg

    from tests.beds.pgbouncer import PgBouncer
    from tests.beds.postgres import PgCluster
    from tests.bench.fleet_record import record
    from wgsyncd import store

    base = Path(tempfile.mkdtemp(prefix="wgsyncd-fleet-", dir="/tmp"))
    os.chmod(base, 0o755)
    cluster = PgCluster.start(base / "db", durable=True)
    bouncer = None
    try:
        settings = apply_settings(cluster, args.pg_set)
        owner_dsn, owner = cluster.create_owned_database()
        with psycopg.connect(owner_dsn) as conn:
            store.migrate(conn)
        dbname = str(psycopg.conninfo.conninfo_to_dict(owner_dsn)["dbname"])
        cluster.admin("CREATE EXTENSION IF NOT EXISTS pg_walinspect", dbname=dbname)  # WAL breakdown
        bouncer = PgBouncer.start(
            base / "pgb", cluster, pool_size=args.pool, max_client_conn=args.hosts + 100
        )
        bouncer.add_user(owner)
        dsn = bouncer.route(owner_dsn)
        state_dir = tempfile.mkdtemp(dir=base)
        rec = record(owner_dsn, args.peers, state_dir)
        probe = Probe(
            cluster, bouncer, cluster.dsn(str(psycopg.conninfo.conninfo_to_dict(owner_dsn)["dbname"]))
        )
        hosts = list(range(args.hosts))
        res: dict[str, Any] = {
            "hosts": args.hosts, "peers_per_host": args.peers, "interval_s": args.interval,
            "workers": args.workers, "pool_size": args.pool, "idle_percent": args.idle_percent,
            "statements_per_cycle": {
                "first": len(rec.first), "steady": len(rec.steady[0]), "idle": len(rec.idle)},
            "postgres": "fsync on, synchronous_commit on, shared_buffers default (128 MB)",
            "postgres_settings": settings,
        }  # fmt: skip
        inflight = max(1, args.pool // args.workers + 1)
        t0 = time.monotonic()
        pop = _measured(
            "populate", probe, _run("populate", probe, dsn, rec, hosts, args.workers, inflight=inflight)
        )
        res["populate"] = pop
        log(_line(pop) + f" ({time.monotonic() - t0:.0f} s)")
        res["sizes_after_populate"] = sizes(owner_dsn)
        got = _run(
            "capacity", probe, dsn, rec, hosts, args.workers, inflight=inflight, probe_s=args.probe, k0=1
        )
        res["capacity"] = cap = _measured("capacity", probe, got)
        log(_line(cap))
        steps = []
        m = args.hosts
        lo, hi = 0, None
        for _ in range(args.steps):
            step = paced(probe, dsn, rec, m, args.interval, args.workers, args.idle_percent)
            steps.append(step)
            log(_line(step) + f", {m} hosts: keeps up {'yes' if step['keeps_up'] else 'NO'} "
                f"(committed at most {step['done_after_slot_max_s']:.2f} s after its slot)")  # fmt: skip
            if step["keeps_up"]:
                lo = m
                if hi is None or hi - lo <= max(100, args.hosts // 20):
                    break
            else:
                hi = m
            m = (lo + hi) // 2 if hi is not None else m
            if m <= 0:
                break
        res["paced_steps"] = steps
        res["largest_kept_up"] = max((s["hosts"] for s in steps if s["keeps_up"]), default=0)
        res["keeps_up"] = any(s["keeps_up"] and s["hosts"] == args.hosts for s in steps)
        res["sizes_after"] = sizes(owner_dsn)
        res["day"] = simulated_day(res, args.hosts)
        return res
    finally:
        if bouncer is not None:
            bouncer.stop()
        cluster.stop("fast")
        shutil.rmtree(base, ignore_errors=True)


def _line(p: dict[str, Any]) -> str:
    """One log line of a phase."""
    return (
        f"  fleet {p['phase']}: {p['cycles']} cycles, {p['cycles_per_s']:.1f}/s, "
        f"p50 {p['latency_p50_s'] * 1000:.0f} ms, p99 {p['latency_p99_s'] * 1000:.0f} ms, "
        f"PostgreSQL {p['db_cpu_cores']:.2f} cores ({p['db_cpu_ms_per_cycle']:.1f} ms/cycle), "
        f"pgbouncer {p['pooler_cpu_cores']:.2f}, generator {p['generator_cpu_cores']:.2f} cores, "
        f"WAL {p['wal_bytes_per_cycle'] / 1024:.1f} KiB/cycle"
        + (f" ({p['wal_fpi_share']:.0%} full-page images)" if p.get("wal_fpi_share") is not None else "")
    )


def _fpi(p: dict[str, Any]) -> str:
    """ ", 80% FPI" when the full-page-image share was measured."""
    share = p.get("wal_fpi_share")
    return "" if share is None else f" ({share:.0%} full-page images)"


def _total(sz: dict[str, dict[str, Any]]) -> int:
    """Bytes of every table and index together."""
    return sum(v["table"] + v["index"] for v in sz.values())


def _gib(n: float) -> str:
    """Bytes as GiB (or MiB when small)."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def table(res: dict[str, Any]) -> str:
    """The printed (and README) table."""
    need = res["hosts"] / res["interval_s"]
    lines = [
        f"{res['hosts']:,} hosts x {res['peers_per_host']:,} peers every {res['interval_s']:g} s "
        f"(needs {need:.1f} cycles/s) through pgbouncer (transaction mode, {res['pool_size']} server "
        f"connections), {res['workers']} generator processes replaying the writer's recorded statements",
        "| phase | hosts | cycles | cycles/s | p50 | p99 | PostgreSQL CPU | per cycle | WAL per cycle "
        "| pgbouncer CPU | generator CPU | committed after its slot, max | keeps up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in [res["populate"], res["capacity"], *res["paced_steps"]]:
        ok = ("yes" if p["keeps_up"] else "NO") if "keeps_up" in p else ""
        lag = f"{p['done_after_slot_max_s']:.1f} s" if "done_after_slot_max_s" in p else ""
        lines.append(
            f"| {p['phase']} | {p.get('hosts', res['hosts']):,} | {p['cycles']:,} | {p['cycles_per_s']:.1f} "
            f"| {p['latency_p50_s'] * 1000:.0f} ms | {p['latency_p99_s'] * 1000:.0f} ms "
            f"| {p['db_cpu_cores']:.2f} cores | {p['db_cpu_ms_per_cycle']:.1f} ms "
            f"| {p['wal_bytes_per_cycle'] / 1024:.1f} KiB{_fpi(p)} | {p['pooler_cpu_cores']:.2f} cores "
            f"| {p['generator_cpu_cores']:.2f} cores | {lag} | {ok} |"
        )
    day = res["day"]
    cap = res["capacity"]["cycles_per_s"]
    lines += [
        f"keeps up at {res['hosts']:,} hosts: {'yes' if res['keeps_up'] else 'NO'}; largest paced run "
        f"that kept up: {res['largest_kept_up']:,} hosts; capacity {cap:.1f} cycles/s "
        f"= {cap * res['interval_s']:,.0f} hosts at this interval",
        f"size after populate: {_gib(_total(res['sizes_after_populate']))}; "
        f"after a simulated day: {_gib(day['total_bytes_after_day'])} "
        f"(+{_gib(day['append_bytes_per_day'])}/day of peer_traffic + sync_status); "
        f"at 90-day retention: {_gib(day['total_bytes_at_90_day_retention'])} with hourly history "
        f"({_gib(day['total_bytes_at_90_day_retention_per_cycle_rows'])} with a row per cycle)",
    ]
    return "\n".join(lines)


def common_args(ap: argparse.ArgumentParser, hosts: int, peers: int, interval: float, what: str) -> None:
    """The knobs every fleet run shares (this module and tests/bench/fleet_roles.py)."""
    ap.add_argument("--hosts", type=int, default=hosts, help=f"simulated hosts{what}")
    ap.add_argument("--peers", type=int, default=peers, help="peers per host")
    ap.add_argument("--interval", type=float, default=interval, help="seconds between a host's cycles")
    ap.add_argument("--workers", type=int, default=2, help="generator processes")
    ap.add_argument("--idle-percent", type=int, default=0, help="share of paced cycles with nothing changed")
    ap.add_argument(
        "--pg-set", action="append", default=[], metavar="NAME=VALUE",
        help="a PostgreSQL setting for this run (reload-level, e.g. max_wal_size=16GB); repeatable",
    )  # fmt: skip
    ap.add_argument(
        "--out", default=None, help="JSON path (default tests/bench/results/<kind>-<UTC time>.json)"
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The knobs; defaults are issue 14's target."""
    ap = argparse.ArgumentParser(prog="python -m tests.bench.fleet", description=__doc__.split("\n")[0])
    common_args(ap, hosts=10000, peers=1000, interval=60.0, what="")
    ap.add_argument("--probe", type=float, default=120.0, help="capacity probe seconds")
    ap.add_argument("--steps", type=int, default=4, help="paced runs at most (stepping the host count)")
    ap.add_argument("--pool", type=int, default=8, help="pgbouncer server connections")
    return ap.parse_args(argv)


def run_and_report(module: str, argv: list[str], args: argparse.Namespace, run: Any, table: Any) -> int:
    """Run ``run(args, log)``, print ``table`` of it, write the JSON under the module's name
    (key and file prefix: fleet, fleet_roles -> fleet-roles-<UTC time>.json)."""
    from tests.bench.__main__ import machine, report

    key = module.rsplit(".", 1)[1]
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.monotonic()
    result = {"started_at": started, "command": " ".join([f"python -m {module}", *argv]),
              "machine": machine(), "loadavg_at_start": os.getloadavg(),
              key: run(args, log=lambda m: print(m, flush=True))}  # fmt: skip
    result["elapsed_s"] = time.monotonic() - t0
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    report(result, table(result[key]), args.out, prefix=key.replace("_", "-") + "-")
    return 0


def main(argv: list[str]) -> int:
    """Run, print the table, write the JSON."""
    return run_and_report("tests.bench.fleet", argv, parse_args(argv), run_fleet, table)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
