"""``python -m tests.bench``: the whole benchmark in one run; table on stdout, JSON on disk.

Default size: N = 1,000 and 10,000 peers on one host (``--large`` adds 50,000), the
netlink read of 10,000 peers in the kernel VM next to ``wg show all dump`` + parse
(``--no-vm`` skips it; skipped with the reason where the VM bed cannot run), and
1,000 hosts x 1,000 peers at a 60 s interval, directly and again through pgbouncer in
transaction mode (``--no-pgbouncer`` skips that); about 10 minutes on a 2-core box.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# the targets, as ratios (value / floor) or absolute numbers
TARGETS = {
    "first_sync_vs_floor": 5.0,  # a new process, nothing cached, into an empty database
    "timer_sync_vs_floor": 5.0,  # a new process on an unchanged host: the timer mode (synccache)
    "idle_merge_db_vs_floor": 0.10,  # the kernel and wgrest reads are the floor's own cost
    "steady_vs_floor": 1.0,
    "daemon_rss_mb": 80.0,
}


def machine() -> dict[str, Any]:
    """nproc, memory, CPU model, kernel, library versions: what a later run must match to compare."""
    model = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as fh:
        mem_kib = int(fh.readline().split()[1])
    import psycopg

    pg = subprocess.run(
        ["/usr/lib/postgresql/15/bin/postgres", "--version"], capture_output=True, text=True
    ).stdout
    wggo = subprocess.run(["wireguard-go", "--version"], capture_output=True, text=True).stdout
    return {
        "nproc": os.cpu_count(),
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "psycopg": psycopg.__version__,
        "postgres": pg.strip(),
        "wireguard_go": wggo.strip().splitlines()[0] if wggo.strip() else "",
        "loadavg_at_start": os.getloadavg(),
    }


def ratios(size: dict[str, Any]) -> dict[str, float]:
    """The issue's ratios for one N (0 when the floor could not be measured)."""

    def div(a: float, b: float) -> float:
        return a / b if b else 0.0

    return {
        "first_sync_vs_floor": div(size["first_sync_s"], size["floor_cold_s"]),
        "pyfloor_vs_floor": div(size.get("pyfloor_s", 0.0), size["floor_cold_s"]),
        "first_sync_vs_pyfloor": div(size["first_sync_s"], size.get("pyfloor_s", 0.0)),
        "idle_vs_floor": div(size["idle"]["total_s"], size["floor_warm_s"]),
        "idle_db_vs_floor": div(size["idle"]["write_s"], size["floor_warm_s"]),
        "idle_merge_db_vs_floor": div(_merge_db(size), size["floor_warm_s"]),
        "steady_vs_floor": div(size["steady"]["total_s"], size["floor_warm_s"]),
        "steady_db_vs_floor": div(size["steady"]["write_s"], size["floor_warm_s"]),
        "rss_mb": size["rss_kib"] / 1024,
        "timer_sync_vs_floor": div(size.get("timer_sync_s", 0.0), size["floor_warm_s"]),
        "daemon_rss_mb": size["daemon_rss_kib"] / 1024,
        "daemon_empty_db_rss_mb": size.get("daemon_empty_db_rss_kib", 0) / 1024,
    }


def _merge_db(size: dict[str, Any]) -> float:
    """An idle cycle's merge + database time (from the piece-by-piece cycles; 0 without them)."""
    parts = size.get("idle_breakdown") or {}
    return parts.get("merge_s", 0.0) + parts.get("write_s", 0.0)


def _ok(name: str, value: float) -> str:
    """'ok' / 'MISS' against the target of ``name`` (or '' when it has none)."""
    target = TARGETS.get(name)
    if target is None:
        return ""
    return "ok" if value <= target else "MISS"


def _row(what: str, value: str, ratio: float | None, target: str = "", raw: float | None = None) -> str:
    """One markdown row: measurement, value, ratio to the floor, target and verdict."""
    limit = TARGETS.get(target)
    shown = "" if ratio is None else f"{ratio:.2f}x"
    goal = "" if limit is None else (f"<= {limit:g} MB" if target.endswith("_mb") else f"<= {limit:g}x")
    verdict = _ok(target, raw if raw is not None else (ratio or 0.0)) if limit is not None else ""
    return f"| {what} | {value} | {shown} | {goal} | {verdict} |"


def table(result: dict[str, Any]) -> str:
    """The printed (and README) table: one block per N, then the multi-host line."""
    lines = []
    for size in result["sizes"]:
        r, idle, steady = size["ratios"], size["idle"], size["steady"]
        lines += [
            f"N = {size['n']:,} peers (medians of {size['reps']})",
            "| measurement | time | vs floor | target | |",
            "|---|---|---|---|---|",
            _row("floor: wg dump -> psql \\copy + upsert, empty table", f"{size['floor_cold_s']:.3f} s", 1.0),
            _row("floor, table already filled", f"{size['floor_warm_s']:.3f} s", 1.0),
            _row(
                "Python floor: the 3 sources read and joined in Python (psycopg, requests), "
                "COPY + upsert; no checks, no history (tests/bench/pyfloor.py)",
                f"{size['pyfloor_s']:.3f} s" if "pyfloor_s" in size else "-",
                r.get("pyfloor_vs_floor"),
            ),
            _row(
                "first full sync (`wgsyncd sync`, 3 sources, new process)"
                + (
                    f"; {r['first_sync_vs_pyfloor']:.1f}x the Python floor"
                    if r.get("first_sync_vs_pyfloor")
                    else ""
                ),
                f"{size['first_sync_s']:.3f} s",
                r["first_sync_vs_floor"],
                "first_sync_vs_floor",
            ),
            _row(
                "one-shot sync on an unchanged host (`wgsyncd sync` again: timer mode), vs warm floor",
                f"{size['timer_sync_s']:.3f} s" if "timer_sync_s" in size else "-",
                r.get("timer_sync_vs_floor"),
                "timer_sync_vs_floor",
            ),
            _row(
                "daemon's first cycle (`wgsyncd run` started; nothing parsed, DB rows loaded)",
                f"{size['daemon_first_cycle']['total_s']:.3f} s" if size.get("daemon_first_cycle") else "-",
                None,
            ),
            _row(
                f"steady cycle ({steady['stats_rows']:,} peers with new counters)",
                f"{steady['total_s']:.3f} s",
                r["steady_vs_floor"],
                "steady_vs_floor",
            ),
            _row(
                "- of which DB write",
                f"{steady['write_s']:.3f} s",
                r["steady_db_vs_floor"],
                "steady_vs_floor",
            ),
            _row(
                f"idle cycle ({idle['rows_written']} config rows, {idle['stats_rows']} stats rows, "
                f"{idle['round_trips']} round trips)",
                f"{idle['total_s']:.3f} s",
                r["idle_vs_floor"],
            ),
            _row("- of which DB write", f"{idle['write_s']:.3f} s", r["idle_db_vs_floor"]),
            _row(
                "- of which merge + DB write (piece by piece below)",
                f"{_merge_db(size):.3f} s",
                r["idle_merge_db_vs_floor"],
                "idle_merge_db_vs_floor",
            ),
            _row(
                "peak RSS (daemon, over the database the first syncs filled)",
                f"{r['daemon_rss_mb']:.1f} MB",
                None,
                "daemon_rss_mb",
                r["daemon_rss_mb"],
            ),
            _row(
                "peak RSS (daemon started on an empty database: its first cycle writes every row)",
                f"{r['daemon_empty_db_rss_mb']:.1f} MB" if r.get("daemon_empty_db_rss_mb") else "-",
                None,
                "daemon_rss_mb",
                r.get("daemon_empty_db_rss_mb"),
            ),
            _row("peak RSS (any process: `wgsyncd sync` or daemon)", f"{r['rss_mb']:.1f} MB", None),
            "",
        ]
        if size.get("idle_breakdown"):
            parts = ", ".join(f"{k.removesuffix('_s')} {v:.3f} s" for k, v in size["idle_breakdown"].items())
            lines += [f"idle cycle, piece by piece: {parts}", ""]
    if result.get("kernel_vm"):
        from tests.bench.kernel_vm import lines as vm_lines

        lines += vm_lines(result["kernel_vm"])
    for key in ("multihost", "multihost_pgbouncer"):
        if result.get(key):
            lines += _multihost_lines(result[key])
    if result.get("multihost") and result.get("multihost_pgbouncer"):
        lines += _side_by_side(result["multihost"], result["multihost_pgbouncer"])
    return "\n".join(lines)


def _multihost_lines(mh: dict[str, Any]) -> list[str]:
    """The block of one multi-host run (direct, or through pgbouncer)."""
    cap, paced = mh["capacity"], mh["paced"]
    pooled = mh.get("via") == "pgbouncer"
    via = (
        f", through pgbouncer: transaction mode, {mh['pool_size']} server connections"
        if pooled
        else ", direct connections"
    )
    lines = [
        f"{mh['hosts']:,} hosts x {mh['peers_per_host']:,} peers every {mh['interval_s']:g} s "
        f"(needs {mh['required_cycles_per_s']:.1f} cycles/s; {mh['workers']} generator processes{via})",
        "| phase | cycles/s | p50 | p99 | rows/s | DB CPU | generator CPU |"
        + (" pgbouncer CPU |" if pooled else ""),
        "|---|---|---|---|---|---|---|" + ("---|" if pooled else ""),
    ]
    for name in ("populate", "capacity", "paced"):
        p = mh[name]
        cells = [
            name,
            f"{p['cycles_per_s']:.1f}",
            f"{p['latency_p50_s'] * 1000:.0f} ms",
            f"{p['latency_p99_s'] * 1000:.0f} ms",
            f"{p['rows_per_s']:,.0f}",
            f"{p['db_cpu_cores']:.2f} cores",
            f"{p['generator_cpu_cores']:.2f} cores",
        ] + ([f"{p['pooler_cpu_cores']:.2f} cores"] if pooled else [])
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        f"keeps up: {'yes' if mh['keeps_up'] else 'NO'} "
        f"({paced['cycles']}/{paced['expected_cycles']} cycles, "
        f"latest start {paced['late_max_s']:.2f} s after its slot); headroom {mh['headroom']:.1f}x "
        f"(capacity {cap['cycles_per_s']:.1f} cycles/s); PostgreSQL needs "
        f"{mh['db_cpu_cores_at_required_rate']:.2f} of {mh['cpus']} cores at the required rate"
        + (f"; mean wait for a server connection {mh['pool_wait_mean_ms']:.2f} ms" if pooled else ""),
        "",
    ]
    return lines


def _side_by_side(direct: dict[str, Any], pooled: dict[str, Any]) -> list[str]:
    """The two multi-host runs of this one `make bench`, figure by figure."""
    rows = [
        ("capacity, cycles/s", lambda m: f"{m['capacity']['cycles_per_s']:.1f}"),
        ("capacity, p50 / p99", lambda m: _ms(m["capacity"])),
        ("paced, p50 / p99", lambda m: _ms(m["paced"])),
        ("paced, latest start after its slot", lambda m: f"{m['paced']['late_max_s']:.2f} s"),
        ("PostgreSQL CPU at the required rate", lambda m: f"{m['db_cpu_cores_at_required_rate']:.2f} cores"),
        ("keeps up", lambda m: "yes" if m["keeps_up"] else "NO"),
    ]
    lines = ["| multi-host, same run | direct | pgbouncer |", "|---|---|---|"]
    lines += [f"| {name} | {fmt(direct)} | {fmt(pooled)} |" for name, fmt in rows]
    return [*lines, ""]


def _ms(phase: dict[str, Any]) -> str:
    """p50 / p99 latency of a phase in ms."""
    return f"{phase['latency_p50_s'] * 1000:.0f} / {phase['latency_p99_s'] * 1000:.0f} ms"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The knobs; defaults are the issue's default size."""
    ap = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    ap.add_argument("--sizes", default="1000,10000", help="peers per host for the single-host part")
    ap.add_argument("--large", action="store_true", help="add N = 50,000")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per measurement (median)")
    ap.add_argument("--hosts", type=int, default=1000, help="multi-host: simulated hosts")
    ap.add_argument("--host-peers", type=int, default=1000, help="multi-host: peers per host")
    ap.add_argument(
        "--interval", type=float, default=60.0, help="multi-host: seconds between a host's cycles"
    )
    ap.add_argument(
        "--duration", type=float, default=None, help="multi-host paced run (default: one interval)"
    )
    ap.add_argument("--probe", type=float, default=20.0, help="multi-host capacity probe seconds")
    ap.add_argument("--workers", type=int, default=4, help="multi-host generator processes")
    ap.add_argument("--no-single", action="store_true", help="skip the single-host part")
    ap.add_argument("--no-multihost", action="store_true", help="skip the multi-host part")
    ap.add_argument("--no-pgbouncer", action="store_true", help="skip the multi-host run through pgbouncer")
    ap.add_argument("--no-vm", action="store_true", help="skip the kernel VM step (netlink read vs wg dump)")
    ap.add_argument(
        "--pgbouncer-pool", type=int, default=2, help="multi-host via pgbouncer: server connections"
    )
    ap.add_argument("--out", default=None, help="JSON path (default tests/bench/results/<UTC time>.json)")
    return ap.parse_args(argv)


def compile_package() -> str:
    """Byte-compile wgsyncd before any timing, as an installed host has it.

    Why: a host runs wgsyncd installed by apt (py3compile) or pip, both of which
    byte-compile it; a checkout run with PYTHONDONTWRITEBYTECODE=1 (as CI and this
    machine set) or with stale .pyc files instead compiles changed modules in every
    new process, which the first-sync and timer-mode runs would count (~70 ms here).
    """
    import compileall

    pkg = Path(__file__).resolve().parents[2] / "wgsyncd"
    if not compileall.compile_dir(str(pkg), quiet=1, workers=1):
        raise RuntimeError(f"byte-compiling {pkg} failed")
    return f"compiled {pkg} before timing"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start PostgreSQL (and wireguard-go for the single-host part), measure, tear down."""
    from tests.beds.postgres import PgCluster

    sizes = [int(s) for s in args.sizes.split(",") if s] + ([50000] if args.large else [])
    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m tests.bench", *sys.argv[1:]]),
        "machine": machine(),
        "targets": TARGETS,
        "bytecode": compile_package(),
        "sizes": [],
    }
    t0 = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="wgsyncd-bench-", dir="/tmp"))
    os.chmod(base, 0o755)
    cluster = PgCluster.start(base / "db")
    try:
        if not args.no_single:
            result["sizes"] = _single(args, sizes, base, cluster)
        if not args.no_vm:  # skipped with its reason printed when the VM bed cannot run here
            from tests.bench.kernel_vm import run_vm_bench

            print("kernel VM: netlink read of 10,000 peers vs `wg show all dump` + parse:", flush=True)
            result["kernel_vm"] = run_vm_bench(log=lambda m: print(m, flush=True))
        if not args.no_multihost:
            from tests.bench.multihost import run_multihost

            print(
                f"multi-host: {args.hosts} hosts x {args.host_peers} peers, interval {args.interval:g} s",
                flush=True,
            )
            result["multihost"] = run_multihost(
                cluster,
                hosts=args.hosts,
                peers=args.host_peers,
                interval=args.interval,
                duration_s=args.duration,
                workers=args.workers,
                probe_s=args.probe,
                log=lambda m: print(m, flush=True),
            )
            if not args.no_pgbouncer:
                result["multihost_pgbouncer"] = _multihost_pgbouncer(args, base, cluster)
    finally:
        cluster.stop("fast")
        shutil.rmtree(base, ignore_errors=True)
    result["elapsed_s"] = time.monotonic() - t0
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    return result


def _multihost_pgbouncer(args: argparse.Namespace, base: Path, cluster: Any) -> dict[str, Any]:
    """The same multi-host run, its connections through pgbouncer (transaction mode)."""
    from tests.beds.pgbouncer import PgBouncer
    from tests.bench.multihost import run_multihost

    print(f"multi-host through pgbouncer ({args.pgbouncer_pool} server connections):", flush=True)
    bouncer = PgBouncer.start(base / "pgb", cluster, pool_size=args.pgbouncer_pool)
    try:
        return run_multihost(
            cluster,
            hosts=args.hosts,
            peers=args.host_peers,
            interval=args.interval,
            duration_s=args.duration,
            workers=args.workers,
            probe_s=args.probe,
            pooler=bouncer,
            log=lambda m: print(m, flush=True),
        )
    finally:
        bouncer.stop()


def _single(args: argparse.Namespace, sizes: list[int], base: Path, cluster: Any) -> list[dict[str, Any]]:
    """The single-host part for every N, with one wireguard-go bed."""
    from tests.beds.wireguard import WgBed, missing_reason
    from tests.bench.single import bench_size

    reason = missing_reason()
    if reason:
        raise SystemExit(f"the single-host benchmark needs root and wireguard-go: {reason} (or --no-single)")
    bed = WgBed()
    out = []
    try:
        for n in sizes:
            print(f"single host, N = {n}:", flush=True)
            size = bench_size(n, args.reps, base, cluster, bed, log=lambda m: print(m, flush=True))
            size["ratios"] = ratios(size)
            out.append(size)
    finally:
        bed.close()
    return out


def report(result: dict[str, Any], text: str, out: str | None, prefix: str = "") -> None:
    """Print the table, write the JSON (default tests/bench/results/<prefix><UTC time>.json)."""
    print()
    print(text)
    path = Path(out) if out else RESULTS_DIR / (prefix + result["started_at"].replace(":", "") + ".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, sort_keys=True, default=str) + "\n")
    print(f"JSON: {path} (total {result['elapsed_s']:.0f} s)")


def main(argv: list[str]) -> int:
    """Run, print the table, write the JSON; exit 0 (targets are reported, not enforced)."""
    args = parse_args(argv)
    result = run(args)
    report(result, table(result), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
