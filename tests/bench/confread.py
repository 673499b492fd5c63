"""``python -m tests.bench.confread [--peers N] [--runs K] [--profile]``: the conf source alone.

Why its own step: the first full sync reads a 10,000-peer conf before anything is
cached, and the conf read was most of that sync's Python time. This writes the
benchmark host's conf file (tests/bench/hostbed.py's peers, tests/test_e2e.py's
wg-quick layout), reads it K times with an empty parse cache through
``sources.conffiles.read`` (file I/O, parse, wgconfig cross-check) and prints the best
wall and CPU seconds as JSON; ``--profile`` adds cProfile's top functions. No root,
no beds: it runs anywhere the unit tests run.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time
from pathlib import Path

from tests.beds.host import wg_quick_conf
from tests.beds.wireguard import genkey
from tests.bench.hostbed import bench_peers
from wgsyncd.config import ConfConfig
from wgsyncd.sources import conffiles


def measure(directory: Path, runs: int) -> dict[str, float]:
    """Best wall and CPU seconds of ``runs`` reads of the directory, each with an empty cache."""
    cfg = ConfConfig(directory=str(directory))
    wall = cpu = float("inf")
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        result = conffiles.read(cfg, None, {})  # an empty parse memo: every run parses
        wall = min(wall, time.perf_counter() - w)
        cpu = min(cpu, time.process_time() - c)
        assert not result.errors, result.errors
    return {"wall_s": round(wall, 4), "cpu_s": round(cpu, 4)}


def main() -> None:
    """Write the conf, read it, print JSON (and the profile when asked)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "wgb0.conf"
        conf.write_text(wg_quick_conf(genkey(), 51820, bench_peers(args.peers)))
        conf.chmod(0o600)
        out = {"peers": args.peers, "bytes": conf.stat().st_size, **measure(Path(tmp), args.runs)}
        print(json.dumps(out))
        if args.profile:
            prof = cProfile.Profile(time.process_time)
            prof.runcall(conffiles.read, ConfConfig(directory=tmp), None, {})
            pstats.Stats(prof).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
