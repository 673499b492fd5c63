"""The single-host benchmark for one N: floor, first full sync, idle and steady cycles, RSS.

Order matters and is part of the method: idle cycles run before any traffic (so
nothing at all changes between them), then the steady cycles, each after 10% of
the peers' counters moved for real (see hostbed). Every timing is a median of
``reps`` runs; the raw runs go into the JSON too.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.beds.postgres import PgCluster
from tests.beds.wireguard import WgBed
from tests.bench import floor, pyfloor
from tests.bench.hostbed import BenchHost, pick_active

ROOT = Path(__file__).resolve().parents[2]


def median(values: list[float]) -> float:
    """The median, or 0.0 for no values (a smoke run with reps=0 still prints)."""
    return float(statistics.median(values)) if values else 0.0


# A child's ru_maxrss is at least the RSS its parent had when it started it: Linux keeps
# the high-water mark of the memory a process had before exec (after vfork, the parent's).
# The bench process holds the wgrest test server, the beds and psycopg (50-80 MB), more
# than a 1,000-peer sync needs, so a command whose peak is measured is started by this
# small process instead (~10 MB), which times it and hands back its rusage.
_SPAWNER = """
import os, sys, time
answer = int(sys.argv[1])
os.set_inheritable(answer, False)
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_pid, status, usage = os.wait4(pid, 0)
took = time.monotonic() - t0
os.write(answer, f"{took} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}".encode())
"""


def measured(argv: list[str]) -> tuple[float, int, int, str]:
    """Run ``argv`` (from the repo root) as a child of _SPAWNER: wall time from its start
    to its exit, its own peak RSS (KiB), its exit code and its output (stdout + stderr)."""
    r, w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SPAWNER, str(w), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            pass_fds=(w,),
        )
        os.close(w)
        w = -1
        out, _ = proc.communicate()
        answer = os.read(r, 200).decode()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    if proc.returncode != 0 or len(answer.split()) != 3:
        raise RuntimeError(f"{argv[:3]}: could not be measured: {out.strip()[-400:]}")
    took, rss, code = answer.split()
    return float(took), int(rss), int(code), out


def cli_sync(config: Path) -> tuple[float, int, str]:
    """`wgsyncd sync` as an operator runs it; wall time, peak RSS (KiB), output."""
    elapsed, rss, code, out = measured([sys.executable, "-m", "wgsyncd", "--config", str(config), "sync"])
    if code != 0:
        raise RuntimeError(f"wgsyncd sync exited {code}: {out.strip()[-400:]}")
    return elapsed, rss, out.strip()


class Worker:
    """The daemon-like sync process (tests.bench.worker) driven over a pipe."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.worker", str(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self._read()  # {"ready": true}

    def _read(self) -> dict[str, Any]:
        """One JSON answer; a dead worker is an error naming its exit code."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench worker died (exit {self.proc.wait()})")
        return json.loads(line)

    def sync(self) -> dict[str, Any]:
        """One cycle; its timings and counts."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("sync\n")
        self.proc.stdin.flush()
        return self._read()

    def breakdown(self) -> dict[str, float]:
        """One cycle timed piece by piece: kernel, conf, wgrest, merge, write."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("breakdown\n")
        self.proc.stdin.flush()
        return self._read()

    def quit(self) -> int:
        """Stop it; its peak RSS (VmHWM, KiB) as it reported it: its own, unlike ru_maxrss
        from wait4, which is at least this (bigger) process's RSS when it started it."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        hwm = int(self._read()["vm_hwm_kib"])
        self.proc.wait()
        return hwm


def bench_size(n: int, reps: int, base: Path, cluster: PgCluster, bed: WgBed, log=print) -> dict[str, Any]:
    """Every single-host measurement for ``n`` peers; returns the JSON block for this size."""
    host = BenchHost(base, cluster, bed, n)
    t0 = time.monotonic()
    host.setup()
    took = time.monotonic() - t0
    log(f"  N={n}: interface {host.name} up with {n} peers, conf + wgrest ready ({took:.1f} s)")
    try:
        return _measure(host, n, reps, base, cluster, log)
    finally:
        host.close()
        if host.iface is not None:
            host.iface.delete()


def _measure(host: BenchHost, n: int, reps: int, base: Path, cluster: PgCluster, log) -> dict[str, Any]:
    """The measurements proper, in the documented order."""
    res: dict[str, Any] = {"n": n, "reps": reps}
    # the floor, into an empty table (cold) and then again into the filled one (warm)
    cold, warm = [], []
    fdsn = ""
    for _ in range(reps):
        fdsn = cluster.create_database()
        floor.prepare(fdsn)
        cold.append(floor.run_floor(host.name, fdsn))
    for _ in range(reps):
        warm.append(floor.run_floor(host.name, fdsn))
    if reps and floor.count_rows(fdsn, host.name) != n:
        raise RuntimeError(f"floor stored {floor.count_rows(fdsn, host.name)} rows, expected {n}")
    res["floor_cold_s"], res["floor_warm_s"] = median(cold), median(warm)
    res["floor_runs"] = {"cold": cold, "warm": warm}
    res["floor_command"] = floor.floor_command(host.name, "DSN")
    log(f"  N={n}: floor cold {res['floor_cold_s']:.3f} s, warm {res['floor_warm_s']:.3f} s")
    res.update(_python_floor(host, n, reps, base, cluster))
    log(f"  N={n}: Python floor (3 sources, no checks, no history) {res['pyfloor_s']:.3f} s")

    # first full sync: the CLI into a fresh database each time
    firsts, rss_cli = [], []
    config = base / f"wgsyncd-{n}.toml"
    for _ in range(max(reps, 1)):
        # as a deployed host: its own role (row-level security, the owner's functions)
        host.write_config(config, cluster.create_host_database(host.host_id))
        elapsed, rss, out = cli_sync(config)
        if f"{n} peer" not in out:
            raise RuntimeError(f"first sync did not sync {n} peers: {out[-300:]}")
        firsts.append(elapsed)
        rss_cli.append(rss)
    res["first_sync_s"] = median(firsts)
    res["first_sync_runs"] = firsts
    res["first_sync_rss_kib"] = max(rss_cli)
    log(f"  N={n}: first full sync {res['first_sync_s']:.3f} s, peak RSS {max(rss_cli) / 1024:.1f} MB")
    res.update(_timer_mode(config, n, reps))
    log(f"  N={n}: one-shot sync, unchanged host (timer mode) {res['timer_sync_s']:.3f} s")
    res["daemon_empty_db_rss_kib"] = _daemon_on_empty_db(host, base, cluster, n)
    empty_mb = res["daemon_empty_db_rss_kib"] / 1024
    log(f"  N={n}: daemon started on an empty database: peak RSS {empty_mb:.1f} MB")

    # the daemon's cycles, over the database of the last first sync
    worker = Worker(config)
    try:
        # the daemon's first cycle: a new process, nothing parsed yet, the DB view loaded;
        # reported on its own, the idle cycles are the ones after it (what a running daemon does)
        res["daemon_first_cycle"] = worker.sync()
        idle = [worker.sync() for _ in range(reps)]
        parts = [worker.breakdown() for _ in range(min(reps, 3))]
        steady = _steady(host, worker, n, reps)
    finally:
        hwm = worker.quit()
    res["idle"] = _summary(idle)
    res["idle_breakdown"] = {k: median([p[k] for p in parts]) for k in parts[0]} if parts else {}
    res["steady"] = _summary(steady)
    res["steady"]["active_peers"] = len(pick_active(n))
    res["daemon_rss_kib"] = hwm
    res["rss_kib"] = max(res["daemon_rss_kib"], res["first_sync_rss_kib"], res["daemon_empty_db_rss_kib"])
    log(
        f"  N={n}: idle {res['idle']['total_s']:.3f} s (DB {res['idle']['write_s']:.3f} s, "
        f"{res['idle']['round_trips']} round trips, {res['idle']['rows_written']} rows), "
        f"steady {res['steady']['total_s']:.3f} s ({res['steady']['stats_rows']} peers with new counters)"
    )
    return res


def _python_floor(host: BenchHost, n: int, reps: int, base: Path, cluster: PgCluster) -> dict[str, Any]:
    """tests/bench/pyfloor.py as a new process, each run into an empty table, timed as
    `wgsyncd sync` is (start to exit): what Python and the fixed libraries cost alone."""
    config = base / f"pyfloor-{n}.toml"
    host.write_config(config, "unused")
    runs, rss = [], []
    for _ in range(max(reps, 1)):
        dsn = cluster.create_database()
        pyfloor.prepare(dsn)
        took, peak, code, out = measured([sys.executable, pyfloor.__file__, str(config), dsn])
        runs.append(took)
        rss.append(peak)
        if code != 0 or pyfloor.count_rows(dsn, host.name) != n:
            raise RuntimeError(f"the Python floor did not store {n} rows: {out.strip()[-300:]}")
    return {"pyfloor_s": median(runs), "pyfloor_runs": runs, "pyfloor_rss_kib": max(rss)}


def _daemon_on_empty_db(host: BenchHost, base: Path, cluster: PgCluster, n: int) -> int:
    """The daemon's peak RSS (KiB) when it is the host's first writer: its first cycle writes
    every row and the first version, then two idle cycles (a host installed and started)."""
    config = base / f"wgsyncd-{n}-empty.toml"
    host.write_config(config, cluster.create_host_database(host.host_id))
    worker = Worker(config)
    try:
        first = worker.sync()
        if first["rows_written"] < n:
            raise RuntimeError(
                f"the daemon's first cycle into an empty database wrote {first['rows_written']} rows"
            )
        worker.sync()
        worker.sync()
    finally:
        hwm = worker.quit()
    return hwm


def _timer_mode(config: Path, n: int, reps: int) -> dict[str, Any]:
    """`wgsyncd sync` again and again on the unchanged host (a systemd timer's runs).

    Each run is a new process that finds the last run's cache in the state dir
    (wgsyncd/synccache.py); the first of them follows the last first full sync.
    """
    runs, rss = [], []
    for _ in range(max(reps, 1)):
        elapsed, peak, out = cli_sync(config)
        if f"{n} peer" not in out or "rows written" in out:
            raise RuntimeError(f"a one-shot sync on an unchanged host wrote rows: {out[-300:]}")
        runs.append(elapsed)
        rss.append(peak)
    return {"timer_sync_s": median(runs), "timer_sync_runs": runs, "timer_sync_rss_kib": max(rss)}


def _steady(host: BenchHost, worker: Worker, n: int, reps: int) -> list[dict[str, Any]]:
    """Cycles after 10% of the peers' tx counters moved (real handshake initiations)."""
    active = pick_active(n)
    out = []
    since = host.counters()
    for _ in range(reps):
        host.poke(active)
        now = host.wait_changed(active, since)
        host.mirror_counters(now)
        out.append(worker.sync())
        since = host.counters()
    return out


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the timing fields, the max of the counts (they should not vary), and the raw runs."""
    if not runs:
        return {"total_s": 0.0, "collect_s": 0.0, "write_s": 0.0, "rows_written": 0, "stats_rows": 0,
                "traffic_rows": 0, "round_trips": 0, "runs": []}  # fmt: skip
    out: dict[str, Any] = {k: median([r[k] for r in runs]) for k in ("total_s", "collect_s", "write_s")}
    for k in ("rows_written", "stats_rows", "traffic_rows", "round_trips"):
        out[k] = max(r[k] for r in runs)  # any run writing a row (or one more round trip) shows
    out["runs"] = runs
    return out
