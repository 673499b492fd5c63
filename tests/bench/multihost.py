"""The multi-host load generator: M simulated hosts x P peers syncing into one PostgreSQL.

Synthetic states go through the real store code (``store.write_cycle``), no
WireGuard needed. Worker processes (not threads: the GIL) each own a slice of the
hosts and one connection, like a pool in front of PostgreSQL would give them.

Phases, each measured on its own:
1. populate: every host's first sync (all rows inserted);
2. capacity: steady cycles back to back for ``probe_s`` seconds -> the most cycles/s
   this box can do; headroom = capacity / (M / interval);
3. paced: every host once per ``interval`` at its own offset, for ``duration_s``;
   latency p50/p99, lateness, rows/s, DB CPU and whether every cycle started on time.

A steady cycle changes the counters of a rotating 10% of a host's peers (new
peer_stats and peer_traffic rows) and no config, like a real host between changes.
Every host uses the same peer keys (one template state per worker, host_id swapped
in): building a fresh 1,000-peer state per cycle would spend the same 2 cores on the
generator instead of on PostgreSQL; rows still differ by host_id, their leading key.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ACTIVE_EVERY = 10  # 1 in 10 peers gets new counters each cycle


def counters_at(j: int, cycle: int) -> int:
    """Peer ``j``'s rx counter at ``cycle``: it grows in the cycles where j % 10 == cycle % 10."""
    times_active = (cycle + ACTIVE_EVERY - j % ACTIVE_EVERY) // ACTIVE_EVERY
    return 1000 + j + 4096 * times_active


@dataclass
class Template:
    """One worker's reusable state: the same peers for every host, counters set per cycle.

    Each host keeps its own Peer objects between cycles and only the peers whose
    counters moved get new ones, which is what the sources and merge hand a running
    agent (write_cycle's contract: a state it wrote is never edited afterwards).
    """

    state: Any
    peers: list[Any]
    by_host: dict[str, list[Any]] = field(default_factory=dict)

    @classmethod
    def build(cls, peers: int) -> Template:
        """A synthetic one-interface state with ``peers`` peers (tests.beds.postgres)."""
        from tests.beds.postgres import synthetic_state

        state = synthetic_state("template", interfaces=1, peers=peers)
        return cls(state=state, peers=list(state.interfaces["wg0"].peers.values()))

    def for_host(self, host_id: str, cycle: int) -> Any:
        """The state host ``host_id`` reports at ``cycle`` (its counters depend on the cycle only)."""
        mine = self.by_host.setdefault(host_id, list(self.peers))
        for j, peer in enumerate(mine):
            rx = counters_at(j, cycle)
            if peer.rx_bytes != rx:
                mine[j] = dataclasses.replace(peer, rx_bytes=rx, tx_bytes=2 * rx)
        iface = dataclasses.replace(self.state.interfaces["wg0"], peers={p.public_key: p for p in mine})
        return dataclasses.replace(
            self.state,
            host_id=host_id,
            hostname=f"{host_id}.example",
            collected_at=datetime.now(UTC),
            interfaces={"wg0": iface},
        )


def _write(conn: Any, tmpl: Template, host_id: str, cycle: int) -> dict[str, Any]:
    """One write_cycle; its latency and what it wrote."""
    from wgsyncd import __version__, store

    state = tmpl.for_host(host_id, cycle)
    t0 = time.monotonic()
    rep = store.write_cycle(
        conn,
        state,
        sync_id=uuid.uuid4(),
        started_at=state.collected_at,
        agent_version=__version__,
        build_ahead=False,  # the daemon's write (daemon.py)
    )
    return {
        "host": host_id,
        "cycle": cycle,
        "latency": time.monotonic() - t0,
        "rows": rep.total_config_rows_written + rep.stats_rows_written + rep.traffic_rows_written + 2,
        "round_trips": rep.round_trips,
    }


def _name(h: int) -> str:
    """Host number -> host_id."""
    return f"host-{h:05d}"


def _worker(args: dict[str, Any], out: Any) -> None:
    """One generator process: runs ``args['phase']`` for its hosts, puts its records on ``out``."""
    from wgsyncd import store
    from wgsyncd.config import DatabaseConfig

    conn = store.connect(DatabaseConfig(dsn=args["dsn"], statement_timeout=120.0), "wgsyncd-bench")
    tmpl = Template.build(args["peers"])
    hosts: list[int] = args["hosts"]
    records: list[dict[str, Any]] = []
    cpu0 = time.process_time()
    try:
        if args["phase"] == "populate":
            for h in hosts:
                records.append(_write(conn, tmpl, _name(h), 0))
        elif args["phase"] == "capacity":
            end = time.monotonic() + args["probe_s"]
            k = 0
            while time.monotonic() < end:
                h = hosts[k % len(hosts)]
                records.append(_write(conn, tmpl, _name(h), args["last"][_name(h)] + 1 + k // len(hosts)))
                k += 1
        else:
            records = _paced(conn, tmpl, args)
    finally:
        conn.close()
    out.put({"records": records, "cpu_s": time.process_time() - cpu0})


def _paced(conn: Any, tmpl: Template, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Each host at start + offset + k*interval; waiting for a slot is the schedule, not a sync."""
    start, interval, m = args["start"], args["interval"], args["m"]
    slots = []
    for h in args["hosts"]:
        k = 0
        while (due := start + interval * (h / m + k)) < start + args["duration_s"]:
            slots.append((due, h, k))
            k += 1
    slots.sort()
    records = []
    for due, h, k in slots:
        now = time.time()
        if due > now:
            time.sleep(due - now)  # pacing: the host's next turn has not come yet
        begin = time.time()
        rec = _write(conn, tmpl, _name(h), args["last"][_name(h)] + 1 + k)
        rec["late"] = begin - due
        records.append(rec)
    return records


def _run_phase(
    phase: str, workers: int, base_args: dict[str, Any], m: int
) -> tuple[list[dict[str, Any]], float, float]:
    """Start the workers for one phase; (records, wall seconds, generator CPU seconds)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = []
    t0 = time.monotonic()
    for w in range(workers):
        args = dict(base_args, phase=phase, hosts=list(range(w, m, workers)))
        p = ctx.Process(target=_worker, args=(args, out), daemon=True)
        p.start()
        procs.append(p)
    results = [out.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        if p.exitcode != 0:
            raise RuntimeError(f"load generator worker exited {p.exitcode}")
    wall = time.monotonic() - t0
    recs = [r for res in results for r in res["records"]]
    return recs, wall, sum(res["cpu_s"] for res in results)


def postgres_cpu_s(data_dir: Path) -> float:
    """CPU seconds used by the cluster so far: postmaster (with reaped backends) + live children."""
    tick = os.sysconf("SC_CLK_TCK")
    pm = int((data_dir / "postmaster.pid").read_text().split()[0])
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        pid, ppid = int(entry), int(fields[1])
        if pid == pm:
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        elif ppid == pm:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of one process so far, e.g. pgbouncer's (single-threaded)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


def _phase_summary(recs: list[dict[str, Any]], wall: float, gen_cpu: float, db_cpu: float) -> dict[str, Any]:
    """Throughput, latency percentiles, rows/s and CPU of one phase."""
    lat = [r["latency"] for r in recs]
    rows = sum(r["rows"] for r in recs)
    return {
        "cycles": len(recs),
        "wall_s": wall,
        "cycles_per_s": len(recs) / wall if wall else 0.0,
        "latency_p50_s": _pct(lat, 0.5),
        "latency_p99_s": _pct(lat, 0.99),
        "latency_mean_s": statistics.fmean(lat) if lat else 0.0,
        "rows_written": rows,
        "rows_per_s": rows / wall if wall else 0.0,
        "round_trips_per_cycle": max((r["round_trips"] for r in recs), default=0),
        "db_cpu_s": db_cpu,
        "db_cpu_cores": db_cpu / wall if wall else 0.0,
        "generator_cpu_s": gen_cpu,
        "generator_cpu_cores": gen_cpu / wall if wall else 0.0,
    }


def run_multihost(
    cluster: Any,
    *,
    hosts: int,
    peers: int,
    interval: float,
    duration_s: float | None = None,
    workers: int = 4,
    probe_s: float = 20.0,
    pooler: Any = None,
    log: Any = print,
) -> dict[str, Any]:
    """All three phases into a fresh database of ``cluster``; the JSON block for the report.

    ``pooler``: a tests.beds.pgbouncer.PgBouncer in front of ``cluster``; the generator's
    connections then go through it (the migration still runs directly) and its own CPU
    is reported next to PostgreSQL's.
    """
    import psycopg

    from wgsyncd import store

    dsn = cluster.create_database()
    with psycopg.connect(dsn) as conn:
        store.migrate(conn)
    duration_s = interval if duration_s is None else duration_s
    agent_dsn = pooler.route(dsn) if pooler is not None else dsn
    base = {"dsn": agent_dsn, "peers": peers, "m": hosts, "interval": interval, "duration_s": duration_s}
    res: dict[str, Any] = {
        "hosts": hosts,
        "peers_per_host": peers,
        "interval_s": interval,
        "workers": workers,
        "via": "direct" if pooler is None else "pgbouncer",
    }
    if pooler is not None:
        res["pool_size"] = pooler.pool_size
    res["required_cycles_per_s"] = hosts / interval

    def phase(
        name: str, window: float | None = None, **extra: Any
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run one phase; rates are over ``window`` (the paced schedule) or the wall time."""
        cpu0 = postgres_cpu_s(cluster.data_dir)
        pooler0 = process_cpu_s(pooler.proc.pid) if pooler is not None else 0.0
        recs, wall, gen = _run_phase(name, workers, dict(base, **extra), hosts)
        out = _phase_summary(recs, window or wall, gen, postgres_cpu_s(cluster.data_dir) - cpu0)
        if pooler is not None:
            out["pooler_cpu_s"] = process_cpu_s(pooler.proc.pid) - pooler0
            out["pooler_cpu_cores"] = out["pooler_cpu_s"] / (window or wall)
        log(
            f"  multihost {res['via']} {name}: {out['cycles']} cycles in {wall:.1f} s = "
            f"{out['cycles_per_s']:.1f}/s, p50 {out['latency_p50_s'] * 1000:.0f} ms, "
            f"p99 {out['latency_p99_s'] * 1000:.0f} ms, DB {out['db_cpu_cores']:.2f} cores, "
            f"generator {out['generator_cpu_cores']:.2f} cores"
            + (f", pgbouncer {out['pooler_cpu_cores']:.2f} cores" if pooler is not None else "")
        )
        return out, recs

    # each host's counters continue from its last written cycle: exactly 10% of peers move per cycle
    last: dict[str, int] = {}

    def track(recs: list[dict[str, Any]]) -> None:
        for r in recs:
            last[r["host"]] = max(last.get(r["host"], 0), r["cycle"])

    res["populate"], recs = phase("populate")
    track(recs)
    res["capacity"], recs = phase("capacity", probe_s=probe_s, last=dict(last))
    track(recs)
    # the paced schedule starts 3 s from now: the workers are up by then (spawn takes ~1 s)
    paced, recs = phase("paced", window=duration_s, start=time.time() + 3.0, last=dict(last))
    late = [r["late"] for r in recs]
    paced["late_p99_s"] = _pct(late, 0.99)
    paced["late_max_s"] = max(late, default=0.0)
    expected = sum(
        1
        for h in range(hosts)
        for k in range(int(duration_s / interval) + 1)
        if interval * (h / hosts + k) < duration_s
    )
    paced["expected_cycles"] = expected
    # keeps up: every scheduled cycle ran, and none started later than 10% of the interval
    paced["keeps_up"] = paced["cycles"] == expected and paced["late_max_s"] <= 0.1 * interval
    res["paced"] = paced
    res["keeps_up"] = paced["keeps_up"]
    res["headroom"] = res["capacity"]["cycles_per_s"] / res["required_cycles_per_s"]
    # the DB's own share: how much of the machine PostgreSQL needs at the required rate
    per_cycle_db = res["capacity"]["db_cpu_s"] / max(1, res["capacity"]["cycles"])
    res["db_cpu_cores_at_required_rate"] = per_cycle_db * res["required_cycles_per_s"]
    res["cpus"] = os.cpu_count()
    if pooler is not None:
        # how long, on average, a transaction waited for one of the pool's server connections
        stats = [r for r in pooler.show("STATS") if r["database"] == dbname_of(dsn)]
        xacts = sum(int(r["total_xact_count"]) for r in stats)
        wait_us = sum(int(r["total_wait_time"]) for r in stats)
        res["pool_wait_mean_ms"] = wait_us / 1000 / xacts if xacts else 0.0
    return res


def dbname_of(dsn: str) -> str:
    """The dbname of a libpq conninfo."""
    from psycopg.conninfo import conninfo_to_dict

    return str(conninfo_to_dict(dsn)["dbname"])
