"""``python -m tests.bench.memory``: the daemon's peak RSS at N peers, with and without a hostile wgrest.

Why: systemd/wgsyncd.service sets MemoryMax=/MemoryHigh=, and those limits must sit
above what a real host needs (measured here, not guessed) and above what a hostile
wgrest can add within the default caps (wgrest.max_answer_mib / max_read_mib). Two
daemon-like processes (tests.bench.worker, the daemon's cycle path) each run the
first cycle and two idle cycles against the same host; the second then gets one cycle
of each hostile answer (a body that never ends, pages that never end). Each process
reports its VmHWM (kernel's peak RSS). Needs root and wireguard-go, like the bench.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.beds.postgres import PgCluster
from tests.beds.wireguard import WgBed, missing_reason
from tests.bench.hostbed import BenchHost
from tests.bench.single import Worker, cli_sync


def peak_mib(host: BenchHost, config: Path, hostile: tuple[str, ...]) -> tuple[float, list[str]]:
    """One worker: first cycle, 2 idle ones, then one cycle per hostile fault; (VmHWM MiB, statuses)."""
    assert host.wgrest is not None
    worker = Worker(config)
    errors: list[str] = []
    try:
        for i in range(3):
            out = worker.sync()
            print(f"cycle {i}: VmHWM {out['vm_hwm_kib'] / 1024:.1f} MiB", file=sys.stderr)
        for fault in hostile:
            host.wgrest.fault = fault
            out = worker.sync()
            errors.append(f"{fault}: {out.get('status', '?')}")
        host.wgrest.fault = None
    finally:
        hwm = worker.quit()
    return hwm / 1024, errors


def main(argv: list[str]) -> int:
    """Print the two peaks (and write them as JSON with --out)."""
    ap = argparse.ArgumentParser(prog="python -m tests.bench.memory", description=__doc__)
    ap.add_argument("--peers", type=int, default=50000)
    ap.add_argument("--out", default=None)
    ap.add_argument("--phases", action="store_true", help="also run tests.bench.rss_phases on the host")
    ap.add_argument("--no-hostile", action="store_true", help="only the normal daemon's peak")
    args = ap.parse_args(argv)
    reason = missing_reason()
    if reason:
        raise SystemExit(f"needs root and wireguard-go: {reason}")
    base = Path(tempfile.mkdtemp(prefix="wgsyncd-mem-", dir="/tmp"))
    os.chmod(base, 0o755)
    cluster = PgCluster.start(base / "db")
    bed = WgBed()
    host = BenchHost(base, cluster, bed, args.peers)
    try:
        host.setup()
        # as a deployed host: its own role on a migrated database (like tests.bench.single)
        config = host.write_config(base / "wgsyncd.toml", cluster.create_host_database(host.host_id))
        if args.phases:
            subprocess.run([sys.executable, "-m", "tests.bench.rss_phases", str(config)], check=True)
            for run in ("first", "timer"):  # `wgsyncd sync`: the first run, then one that finds the cache
                print(f"wgsyncd sync ({run}): peak {cli_sync(config)[1] / 1024:.1f} MiB", file=sys.stderr)
        normal, _ = peak_mib(host, config, ())
        faults = ("huge_body", "endless_pages")
        hostile, errors = (0.0, []) if args.no_hostile else peak_mib(host, config, faults)
    finally:
        host.close()
        if host.iface is not None:
            host.iface.delete()
        bed.close()
        cluster.stop("fast")
        shutil.rmtree(base, ignore_errors=True)
    result = {"peers": args.peers, "peak_mib": round(normal, 1), "peak_hostile_wgrest_mib": round(hostile, 1)}
    result["hostile_cycles"] = errors
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
