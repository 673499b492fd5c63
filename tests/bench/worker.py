"""The long-lived sync process of the benchmark: what `wgsyncd run` does each interval.

The parent starts it once, then writes ``sync`` lines; each cycle is the daemon's
path (``cycle.collect`` + ``store.write_cycle`` over one kept connection, which is
what ``cycle.sync_once`` does) and answers one JSON line with its timings. ``quit``
answers with the process's peak RSS (VmHWM), so RSS covers every cycle it ran.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import UTC, datetime


def vm_hwm_kib() -> int:
    """Peak resident set size of this process, from /proc (kB)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def one_cycle(cfg, conn, memo) -> dict:
    """Collect and write like sync_once, timing the two halves separately."""
    from wgsyncd import __version__, cycle, gcpolicy, store

    started = datetime.now(UTC)
    t0 = time.monotonic()
    with gcpolicy.daemon_cycle():  # the daemon's collector policy around each cycle
        state = cycle.collect(cfg, memo, in_turn=not memo.conf)  # as the daemon: its first read in turn
        t1 = time.monotonic()
        report = store.write_cycle(  # as the daemon: no version content built beside the rows
            conn,
            state,
            sync_id=uuid.uuid4(),
            started_at=started,
            agent_version=__version__,
            build_ahead=False,
        )
    t2 = time.monotonic()  # with the cycle's one young collection (in write_s)
    return {
        "total_s": t2 - t0,
        "collect_s": t1 - t0,
        "write_s": t2 - t1,
        "rows_written": report.total_config_rows_written,
        "stats_rows": report.stats_rows_written,
        "traffic_rows": report.traffic_rows_written,
        "round_trips": report.round_trips,
        "peers": sum(len(i.peers) for i in state.interfaces.values()),
        "status": report.status,
        "errors": len(state.errors),
        "vm_hwm_kib": vm_hwm_kib(),  # peak so far: which cycle made it
    }


def breakdown(cfg, conn, memo) -> dict:
    """Where one idle cycle's time goes: each source, the merge, the write (the same calls as collect).

    Under the daemon's collector policy (gcpolicy.daemon_cycle); its one young
    collection after the cycle is counted in write_s.
    """
    from wgsyncd import gcpolicy

    out: dict[str, float] = {}
    with gcpolicy.daemon_cycle():
        t0 = _breakdown_parts(cfg, conn, memo, out)
    out["write_s"] = time.monotonic() - t0
    return out


def _breakdown_parts(cfg, conn, memo, out: dict[str, float]) -> float:
    """The reads and the merge timed into ``out``, then the write; returns when the write started."""
    from wgsyncd import __version__, cycle, store
    from wgsyncd.sources import conffiles, kernel, wgrest

    want = cycle.interface_filter(cfg)
    results = []
    for name, read, sub in (
        ("kernel_s", kernel.read, (cfg.kernel, want, memo.uapi)),
        ("conf_s", conffiles.read, (cfg.conf, want, memo.conf)),
        ("wgrest_s", wgrest.read, (cfg.wgrest, want, None, memo.wgrest, memo.wgrest_answered)),
    ):
        t0 = time.monotonic()
        results.append(read(*sub))
        out[name] = time.monotonic() - t0
    t0 = time.monotonic()
    state = cycle.merge_sources(cfg, cycle._sealed(results), datetime.now(UTC), memo)
    out["merge_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    store.write_cycle(
        conn,
        state,
        sync_id=uuid.uuid4(),
        started_at=datetime.now(UTC),
        agent_version=__version__,
        build_ahead=False,  # the daemon's write (daemon.py)
    )
    return t0


def main(config_path: str) -> None:
    """Serve ``sync`` / ``quit`` commands from stdin until told to stop."""
    from wgsyncd import config, malloc, store
    from wgsyncd.daemon import settle_heap
    from wgsyncd.memo import Memo

    malloc.tune()  # what daemon.run does first

    cfg = config.load(config_path)
    conn = store.connect(cfg.database)
    store.prepare(conn, cfg.database.auto_migrate)  # a host role: the schema is the owner's
    memo = Memo()  # what the daemon keeps between cycles
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "sync":
            print(json.dumps(one_cycle(cfg, conn, memo)), flush=True)
            settle_heap()  # what the daemon does between cycles
        elif cmd == "breakdown":
            print(json.dumps(breakdown(cfg, conn, memo)), flush=True)
        elif cmd == "quit":
            break
    conn.close()
    print(json.dumps({"vm_hwm_kib": vm_hwm_kib()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
