"""When Python's cyclic garbage collector runs: one home for the policy of every process.

Why a policy at all: what wgsyncd builds is mostly long-lived and acyclic (peers,
provenance maps, memos, row values: some 100,000 container objects at 10,000 peers),
and the collector, triggered every 700 allocations, traverses all of it again and
again without freeing anything. Reference counting frees everything else as it goes.

- A one-shot `wgsyncd sync` (one_shot): collector off from before its heavy imports
  to exit; the process ends seconds later and frees what little cyclic garbage it made.
  Run as a process, it ends without the interpreter's teardown (leave).
- Building a big structure that lives on (building): off while it is built, then
  frozen, so later collections of that process never traverse it again.
- The daemon: off during each cycle, then one young collection of what the cycle made
  (daemon_cycle); on while it sleeps; and the long-lived state frozen between cycles,
  at most hourly (daemon.settle_heap). Cyclic garbage of a cycle is still collected,
  right after that cycle.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import NoReturn


@contextmanager
def _off(then: Callable[[], object]) -> Iterator[None]:
    """The collector off inside; ``then`` after (it turns it back on), unless it was off already."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            then()


@contextmanager
def one_shot() -> Iterator[None]:
    """The collector off for one `wgsyncd sync` run (a new process, then exit).

    Measured at 10,000 peers: 0.3-0.6 s of CPU saved on a run without cache, peak RSS
    unchanged; entered before the sync's imports (psycopg, requests, the sources: some
    60,000 objects of modules, classes and functions) it also saves the 94 collections
    those trigger (15-20 ms of CPU, gc.callbacks). The daemon has its own policy.
    """
    with _off(gc.enable):
        yield


def leave(code: int) -> NoReturn:
    """End this process now with ``code``: output and log handlers flushed, no teardown.

    Why: at exit the interpreter frees a one-shot sync's objects one by one (at 10,000
    peers the memo, the merged state and the writer's view: about a million objects)
    and collects once more with the collector back on: measured 0.1-0.3 s of CPU for
    memory the kernel takes back at once. Only when everything durable is done (the
    transaction committed, the connection closed, the cache files written and their
    child reaped): what is skipped is freeing memory and atexit handlers (idle worker
    threads). Output that can no longer be written (a closed pipe) does not change the code.
    """
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
    logging.shutdown()
    os._exit(code)


@contextmanager
def building() -> Iterator[None]:
    """The collector off while a big acyclic structure is built, the result frozen after.

    Why: unpickling the 10,000-peer sync cache creates ~100,000 container objects and
    the collector would run on every 700 of them, traversing everything built so far:
    measured 0.37-0.56 s with it, 0.10 s without. Frozen (gc.freeze) so the collections
    that follow do not traverse it again. With the collector already off, nothing is
    frozen (there is nothing to spare it from).
    """
    with _off(lambda: (gc.freeze(), gc.enable())):
        yield


@contextmanager
def daemon_cycle() -> Iterator[None]:
    """The collector off during one daemon cycle, then one collection of generation 0.

    Why: with the collector off, every object the cycle made and kept is still in the
    youngest generation afterwards, so one gc.collect(0) looks at exactly those once
    (and frees the cycle's cyclic garbage); with it on, the collector ran 40 times
    in an idle 10,000-peer cycle and 500 times in the first, re-traversing the big
    young dicts and lists each time. Measured with gc.callbacks, CPU time of the
    collections (tests/bench: the worker's cycle at 10,000 peers): idle cycle 8-9 ms
    -> 1.4-2.3 ms; first cycle ~430 ms -> 150 ms (before the first settle); peak RSS
    112.4 -> 113.4 MiB (within run-to-run noise). Generation 1 is collected when the
    automatic schedule would have (every 10th young collection by default): garbage
    that survived its own cycle's collection (a cycle still in use then, dropped in
    a later cycle) is freed within some ten cycles, not at the hourly settle.
    """
    with _off(_after_cycle):
        yield


def _after_cycle() -> None:
    """Collector back on; the cycle's young objects once; generation 1 when it is due."""
    gc.enable()
    gc.collect(0)
    if gc.get_count()[1] >= gc.get_threshold()[1]:
        gc.collect(1)
