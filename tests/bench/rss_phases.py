"""``python -m tests.bench.rss_phases CONFIG``: VmRSS / VmHWM after each phase of the daemon's cycles.

Why: the daemon's peak RSS is set by one phase's transients (the first cycle's reads,
merge, write); this runs the worker's phases one after the other in one process and
prints where the peak grew, so a change can be judged phase by phase. Point it at a
config written by tests.bench.memory (--keep) or any host's config.
"""

from __future__ import annotations

import os
import sys
import tracemalloc
import uuid
from datetime import UTC, datetime


def _status() -> str:
    """VmRSS and VmHWM of this process, in MiB, as printed."""
    vals = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                vals[key] = int(rest.split()[0]) / 1024
    return f"RSS {vals['VmRSS']:.1f} HWM {vals['VmHWM']:.1f}"


def main(config_path: str, cycles: int = 2) -> None:
    """Each phase of ``cycles`` cycles, with RSS and peak after it."""
    from wgsyncd import __version__, config, cycle, store
    from wgsyncd.daemon import settle_heap
    from wgsyncd.memo import Memo
    from wgsyncd.sources import conffiles, kernel, wgrest

    cfg = config.load(config_path)
    conn = store.connect(cfg.database)
    store.prepare(conn, cfg.database.auto_migrate)
    memo = Memo()
    if os.environ.get("RSS_TRACE") == "all":
        tracemalloc.start(1)
    print("start: " + _status())
    for n in range(cycles):
        host = memo.for_host(cfg.host_id)
        want = cycle.interface_filter(cfg)
        results = []
        for name, read, sub in (
            ("kernel", kernel.read, (cfg.kernel, want, host.uapi)),
            ("conf", conffiles.read, (cfg.conf, want, host.conf)),
            ("wgrest", wgrest.read, (cfg.wgrest, want, None, host.wgrest, host.wgrest_answered)),
        ):
            results.append(read(*sub))
            print(f"cycle {n} {name}: " + _status())
        state = cycle.merge_sources(cfg, cycle._sealed(results), datetime.now(UTC), memo)
        del results
        print(f"cycle {n} merge: " + _status())
        trace = n == 0 and os.environ.get("RSS_TRACE") == "write"
        if trace:
            tracemalloc.start(1)
            before = tracemalloc.take_snapshot()
        store.write_cycle(
            conn, state, sync_id=uuid.uuid4(), started_at=datetime.now(UTC), agent_version=__version__
        )
        if trace:
            after = tracemalloc.take_snapshot()
            print(f"write: traced peak {tracemalloc.get_traced_memory()[1] / 2**20:.1f} MiB")
            for stat in after.compare_to(before, "lineno")[:12]:
                print("  ", stat)
            tracemalloc.stop()
        print(f"cycle {n} write: " + _status())
        del state
        settle_heap()
        print(f"cycle {n} settle: " + _status())
    if os.environ.get("RSS_TRACE") == "all":
        print(f"retained after {cycles} cycles: {tracemalloc.get_traced_memory()[0] / 2**20:.1f} MiB")
        for stat in tracemalloc.take_snapshot().statistics("lineno")[:25]:
            print("  ", stat)
    conn.close()


if __name__ == "__main__":
    main(sys.argv[1])
