"""Connections that keep no session state, so they work behind pgbouncer in transaction mode.

Why: with a transaction pooler, consecutive transactions of one client land on
different server connections, and a server connection serves many clients. So:

- no server-side prepared statements (``prepare_threshold=None``): psycopg's
  ``_pg3_0`` prepared on one server connection is missing on the next, or clashes
  with another client's ``_pg3_0`` (pgbouncer 1.18 does not track them);
- no startup ``options``: pgbouncer refuses unknown startup parameters, or, when
  told to ignore them, drops them silently, and the limits would vanish;
- the limits (statement, lock and idle-in-transaction timeouts, UTC) are set with
  ``set_config(..., true)`` as the first statement of EVERY transaction, so they
  hold whichever server connection runs it and end with it (nothing leaks to the
  next client of that server connection).

Both ways a transaction starts are covered: ``conn.transaction()`` (what the store
uses) and the implicit BEGIN of the first statement outside one (named server-side
cursors are not; the store uses none). The price is one short extra statement per
transaction (about 0.15 ms on a local socket). Only public psycopg API is used, so
Debian's psycopg 3.1 and current releases behave the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq

_IDLE = pq.TransactionStatus.IDLE


@dataclass(frozen=True)
class Limits:
    """What every transaction runs under, in milliseconds (0 = no limit, as in PostgreSQL)."""

    statement_ms: int
    lock_ms: int
    idle_in_transaction_ms: int

    @classmethod
    def for_statement_timeout(cls, seconds: float) -> Limits:
        """lock_timeout is half the statement timeout: waiting on a lock (another agent with
        the same host_id, a DBA's ALTER TABLE) fails with a clear error before the
        statement would; an abandoned open transaction is ended well after both."""
        stmt_ms = max(1, int(seconds * 1000))
        return cls(stmt_ms, max(1, stmt_ms // 2), max(60_000, stmt_ms * 3))

    def sql(self) -> bytes:
        """One statement setting every limit for the current transaction only."""
        return (
            f"SELECT set_config('statement_timeout', '{int(self.statement_ms)}', true), "
            f"set_config('lock_timeout', '{int(self.lock_ms)}', true), "
            f"set_config('idle_in_transaction_session_timeout', '{int(self.idle_in_transaction_ms)}', true), "
            "set_config('TimeZone', 'UTC', true)"
        ).encode()


class PooledConnection(psycopg.Connection[Any]):
    """A psycopg connection that opens every transaction with its ``limits``."""

    limits: Limits | None = None

    def apply_limits(self) -> None:
        """Run the limits statement; starts the transaction when none is open (autocommit off)."""
        if self.limits is not None:
            with psycopg.Cursor(self) as cur:  # a plain cursor: does not come back here
                cur.execute(self.limits.sql())

    @contextmanager
    def transaction(self, savepoint_name: str | None = None, force_rollback: bool = False) -> Iterator[Any]:
        """``Connection.transaction``; the outermost block starts with the limits."""
        outer = self.info.transaction_status == _IDLE
        with super().transaction(savepoint_name, force_rollback) as tx:
            if outer:
                self.apply_limits()
            yield tx


def _before_statement(conn: Any) -> None:
    """The first statement outside a transaction block begins one: put the limits first."""
    if isinstance(conn, PooledConnection) and not conn.autocommit and conn.info.transaction_status == _IDLE:
        conn.apply_limits()


class PooledCursor(psycopg.Cursor[Any]):
    """The cursor of a PooledConnection: every way of running SQL checks for an implicit BEGIN."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        """``Cursor.execute`` after the limits when it starts a transaction."""
        _before_statement(self.connection)
        return super().execute(query, params, **kwargs)

    def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
        """``Cursor.executemany`` after the limits when it starts a transaction."""
        _before_statement(self.connection)
        super().executemany(query, params_seq, **kwargs)

    def stream(self, query: Any, params: Any = None, **kwargs: Any) -> Iterator[Any]:
        """``Cursor.stream`` after the limits when it starts a transaction."""
        _before_statement(self.connection)
        return super().stream(query, params, **kwargs)

    @contextmanager
    def copy(self, statement: Any, params: Any = None, **kwargs: Any) -> Iterator[Any]:
        """``Cursor.copy`` after the limits when it starts a transaction."""
        _before_statement(self.connection)
        with super().copy(statement, params, **kwargs) as copy:
            yield copy


def connect(conninfo: str, limits: Limits) -> PooledConnection:
    """Open a PooledConnection (autocommit off, no prepared statements) with ``limits``."""
    conn = PooledConnection.connect(
        conninfo, autocommit=False, prepare_threshold=None, cursor_factory=PooledCursor
    )
    conn.limits = limits
    return conn
