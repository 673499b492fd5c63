"""One object per equal value while the sources read a cycle: the copies of a peer share them.

Why: the kernel, the conf file and wgrest each read every peer's public key, allowed
IPs, endpoint and handshake time; kept as three separate objects those were ~6 MiB
of what a 10,000-peer daemon holds between cycles (the memos keep every source's
copy). While :func:`pooled` is open (cycle.read_sources holds it around the reads),
:func:`one` hands back the first object equal to the value given; outside it, the
value itself. The pool lives for one read only, so it never outgrows a cycle (a
process-wide table such as sys.intern's keeps its size: ~2 MiB at 10,000 peers).
Only immutable values whose equality is their identity for every reader go in:
str, tuples of str, datetime, Secret.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from wgsyncd.state import Secret

T = TypeVar("T")

_lock = threading.Lock()
_open = 0  # how many pooled() blocks are open (tests and the daemon may nest or overlap them)
_values: dict[object, object] | None = None


@contextmanager
def pooled() -> Iterator[None]:
    """Share equal values among everything read inside this block (threads included)."""
    global _open, _values
    with _lock:
        _open += 1
        if _values is None:
            _values = {}
    try:
        yield
    finally:
        with _lock:
            _open -= 1
            if not _open:
                _values = None


def one(value: T) -> T:
    """The pool's object equal to ``value`` (the value itself when no pool is open).

    dict.setdefault is one atomic step under the GIL for str, tuple and datetime keys.
    """
    values = _values
    return value if values is None else values.setdefault(value, value)  # type: ignore[return-value]


def one_secret(value: str) -> Secret:
    """The pool's Secret for this clear value (a new one when no pool is open).

    Keyed by a (marker, value) tuple: a Secret's own hash is Python code, a tuple's is C.
    """
    values = _values
    if values is None:
        return Secret(value)
    key = (Secret, value)
    hit = values.get(key)
    return hit if hit is not None else values.setdefault(key, Secret(value))  # type: ignore[return-value]


def one_tuple(items: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """A tuple of pooled strings, itself pooled (a tuple found whole costs one lookup)."""
    values = _values
    given = tuple(items)
    if values is None:
        return given
    hit = values.get(given)
    if hit is not None:
        return hit  # type: ignore[return-value]
    put = values.setdefault
    shared = tuple([put(v, v) for v in given])
    return put(shared, shared)  # type: ignore[return-value]
