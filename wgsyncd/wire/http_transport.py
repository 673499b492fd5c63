"""HTTP transport details under the wgrest client: deadlines that reach the socket, and
failures classified without repeating URLs or reprs.

Separate from :mod:`wgsyncd.wire.wgrest_http` only for size: nothing here knows wgrest.
Works with urllib3 1.26 (Debian 12) and 2.x.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import weakref
from typing import Any

import requests


def track_connections(session: requests.Session) -> weakref.WeakSet:
    """Mount pools whose connections register themselves, so a deadline can reach them.

    Before the headers are in there is no response to take the socket from, and
    urllib3 does not track connections it has handed out; so each connection this
    session opens is remembered (weakly) here. Works with urllib3 1.26 and 2.x.
    """
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    live: weakref.WeakSet = weakref.WeakSet()

    def tracked(base: type) -> type:
        def connect(self: Any) -> None:
            live.add(self)
            base.connect(self)

        return type(f"Tracked{base.__name__}", (base,), {"connect": connect})

    adapter = requests.adapters.HTTPAdapter(max_retries=0)
    adapter.poolmanager.pool_classes_by_scheme = {
        "http": type("TrackedPool", (HTTPConnectionPool,), {"ConnectionCls": tracked(HTTPConnection)}),
        "https": type("TrackedSPool", (HTTPSConnectionPool,), {"ConnectionCls": tracked(HTTPSConnection)}),
    }
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return live


def cut_connections(live: weakref.WeakSet, cut: threading.Event) -> None:
    """Deadline passed: shut the session's sockets down so the blocked read returns."""
    cut.set()
    for conn in list(live):
        sock = getattr(conn, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def is_refused(exc: BaseException) -> bool:
    """True when the cause chain holds ECONNREFUSED: nothing listens there."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, ConnectionRefusedError):
            return True
        stack.extend([cur.__cause__, cur.__context__])
        stack.extend(a for a in getattr(cur, "args", ()) if isinstance(a, BaseException))
        stack.append(getattr(cur, "reason", None))
    return False


def is_timeout(exc: BaseException) -> bool:
    """True when a ConnectionError wraps a read timeout (requests does that mid-body)."""
    cur: BaseException | None = exc
    for _ in range(10):
        if cur is None:
            return False
        if isinstance(cur, TimeoutError | socket.timeout) or "Timeout" in type(cur).__name__:
            return True
        nxt = cur.args[0] if cur.args and isinstance(cur.args[0], BaseException) else None
        cur = nxt or cur.__cause__ or cur.__context__
    return False


def short_reason(exc: BaseException) -> str:
    """The innermost OS error of a connection failure, without URLs or reprs."""
    cur: BaseException | None = exc
    for _ in range(10):
        if cur is None:
            break
        if isinstance(cur, OSError) and cur.strerror:
            return cur.strerror
        nxt = getattr(cur, "reason", None) or (cur.args[0] if cur.args else None)
        cur = nxt if isinstance(nxt, BaseException) else cur.__cause__ or cur.__context__
    return type(exc).__name__
