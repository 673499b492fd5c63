"""A client-side deadline on database work: close the socket when the server stops answering.

Why: statement_timeout is enforced by the server, so a server that accepts and
never answers (SIGSTOPped, a half-open proxy, a frozen VM) hangs a blocked libpq
read for as long as it lasts; TCP keepalives and tcp_user_timeout do not fire
either, because the peer's kernel still acknowledges. The wgrest reader cuts its
sockets at a whole-answer deadline; this does the same for a database cycle: a
timer thread shuts the connection's socket down (SHUT_RDWR wakes the blocked
read at once, whatever libpq is doing) and the cycle fails with one clear line.

The budget is statement_timeout plus a margin: a healthy server ends any one
statement within statement_timeout (lock_timeout is half of it), and one cycle is
a handful of short statements, so a cycle still running past that is not being
served.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import psycopg

from wgsyncd.store.db import StoreError, describe_connection

MARGIN = 5.0  # seconds on top of statement_timeout


def budget(statement_timeout: float) -> float:
    """The whole-cycle deadline for a given statement_timeout (seconds)."""
    return statement_timeout + MARGIN


class _Cutter:
    """Shuts a connection's socket down once, unless the work ended first."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.done = False
        self.fired = False

    def fire(self) -> None:
        """Deadline passed: shut the socket (a dup of its fd, so ours stays valid to close)."""
        with self.lock:
            if self.done:
                return
            self.fired = True
            try:
                fd = os.dup(self.conn.pgconn.socket)
            except (OSError, psycopg.Error):
                return
            try:
                with socket.socket(fileno=fd) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def finish(self) -> None:
        """The work ended: the timer must not touch the socket any more."""
        with self.lock:
            self.done = True


@contextlib.contextmanager
def deadline(conn: psycopg.Connection[Any], seconds: float, operation: str) -> Iterator[None]:
    """Run database work on ``conn`` that must end within ``seconds``.

    Past it the socket is shut down, the connection is closed, and a StoreError
    says so (naming the database, the operation and the budget); the caller's
    transaction is rolled back by the server when it sees the connection go.
    """
    cutter = _Cutter(conn)
    timer = threading.Timer(seconds, cutter.fire)
    timer.daemon = True
    target = describe_connection(conn)
    timer.start()
    try:
        yield
    except (StoreError, psycopg.Error):
        cutter.finish()
        if cutter.fired:
            with contextlib.suppress(Exception):
                conn.close()
            raise StoreError(
                f"{target}: {operation}: no answer within {seconds:g} s "
                "(client-side deadline: statement_timeout + margin); connection closed"
            ) from None
        raise
    finally:
        cutter.finish()
        timer.cancel()
