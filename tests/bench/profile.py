"""Profile one wgsyncd cycle in-process: ``python -m tests.bench.profile CONFIG [--write]``.

The benchmark's "profile first" tool: cProfile of collect (and write_cycle with
--write) against a running bench host, top functions by cumulative and own time.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import uuid
from datetime import UTC, datetime


def main(argv: list[str]) -> None:
    """Run one collect (+ write) under cProfile and print the top 25 both ways."""
    from wgsyncd import __version__, config, cycle, store
    from wgsyncd.memo import Memo

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
    stats = pstats.Stats(prof)
    stats.sort_stats("cumulative").print_stats(25)
    stats.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main(sys.argv[1:])
