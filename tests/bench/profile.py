"""Profile wgsyncd cycles in-process.

``python -m tests.bench.profile CONFIG [--write] [--twice]``: cProfile of collect (and
write_cycle with --write) against a running bench host, top functions by cumulative
and own time: the benchmark's "profile first" tool.

``python -m tests.bench.profile --idle N``: (root) starts its own PostgreSQL and a
wireguard-go host with N peers, conf file and wgrest (tests/bench/hostbed.py), runs
the daemon's path until it is warm, then times merge and write (signed, as
`wgsyncd run` writes) of idle cycles with the three reads outside the clock, prints
each cycle and cProfile's top functions of the merge + write only.
"""

from __future__ import annotations

import cProfile
import dataclasses
import os
import pstats
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path


def main(argv: list[str]) -> None:
    """Run one collect (+ write) under cProfile and print the top 25 both ways."""
    from wgsyncd import __version__, config, cycle, store
    from wgsyncd.memo import Memo

    if argv and argv[0] == "--idle":
        idle(int(argv[1]) if len(argv) > 1 else 10000)
        return
    cfg = config.load(argv[0])
    conn = store.connect(cfg.database) if "--write" in argv else None
    if conn is not None:
        store.migrate(conn)
    prof = cProfile.Profile()
    memo = Memo()  # --twice: the second cycle is a daemon's next one
    for _ in range(2 if "--twice" in argv else 1):
        prof.enable()
        state = cycle.collect(cfg, memo)
        if conn is not None:
            store.write_cycle(
                conn, state, sync_id=uuid.uuid4(), started_at=datetime.now(UTC), agent_version=__version__
            )
        prof.disable()
    _print(prof)


def _print(prof: cProfile.Profile, top: int = 25) -> None:
    """Top functions by cumulative and by own time."""
    stats = pstats.Stats(prof)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)


def idle(n: int, warm: int = 3, timed: int = 7, profiled: int = 5) -> None:
    """Idle cycles of an ``n``-peer host: merge and write timed apart from the reads."""
    from tests.beds.postgres import PgCluster
    from tests.beds.wireguard import WgBed
    from tests.bench.hostbed import BenchHost
    from wgsyncd import __version__, config, cycle, signing, store
    from wgsyncd.sources import conffiles, kernel, wgrest

    base = Path(tempfile.mkdtemp(prefix="wgsyncd-profile-", dir="/tmp"))
    os.chmod(base, 0o755)
    cluster = PgCluster.start(base / "db")
    bed = WgBed()
    host = BenchHost(base, cluster, bed, n)
    try:
        host.setup()
        cfg = config.load(str(host.write_config(base / "c.toml", cluster.create_host_database(host.host_id))))
        # the signing key goes to a throwaway state dir, never the machine's /var/lib/wgsyncd
        cfg = dataclasses.replace(cfg, daemon=dataclasses.replace(cfg.daemon, state_dir=str(base / "state")))
        conn = store.connect(cfg.database)
        store.prepare(conn, cfg.database.auto_migrate)
        signer = signing.signer_for(cfg.daemon.state_dir, cfg.host_id)
        want = cycle.interface_filter(cfg)

        def one(prof: cProfile.Profile | None = None) -> tuple[float, float, int, int]:
            results = [
                kernel.read(cfg.kernel, want),
                conffiles.read(cfg.conf, want),
                wgrest.read(cfg.wgrest, want, cfg.daemon.state_dir),
            ]
            if prof is not None:
                prof.enable()
            t0 = time.perf_counter()
            state = cycle.merge_sources(cfg, results, datetime.now(UTC))
            t1 = time.perf_counter()
            rep = store.write_cycle(
                conn,
                state,
                sync_id=uuid.uuid4(),
                started_at=datetime.now(UTC),
                agent_version=__version__,
                signer=signer,
            )
            t2 = time.perf_counter()
            if prof is not None:
                prof.disable()
            return t1 - t0, t2 - t1, rep.round_trips, rep.total_config_rows_written

        for _ in range(warm):
            one()
        runs = sorted((one() for _ in range(timed)), key=lambda r: r[0] + r[1])
        for merge_s, write_s, trips, rows in runs:
            print(f"merge {merge_s * 1000:.1f} ms, write {write_s * 1000:.1f} ms, {trips} trips, {rows} rows")
        mid = runs[len(runs) // 2]
        print(f"median merge + write: {(mid[0] + mid[1]) * 1000:.1f} ms ({n} peers)")
        prof = cProfile.Profile()
        for _ in range(profiled):
            one(prof)
        _print(prof)
        conn.close()
    finally:
        host.close()
        if host.iface is not None:
            host.iface.delete()
        bed.close()
        cluster.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
