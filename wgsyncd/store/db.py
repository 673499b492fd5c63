"""Connections and errors: the one place that turns psycopg failures into StoreError.

Every message names the database (host or socket, port, dbname) and the operation,
never the password: callers log these messages and show them in `wgsyncd status`.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from wgsyncd.config import DatabaseConfig
from wgsyncd.store import pooled

log = logging.getLogger("wgsyncd.store")

# keepalives: a dead DB host (or a NAT that dropped us) is noticed in about a minute
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
_LIBPQ_MIN_CONNECT_TIMEOUT = 2  # libpq treats 1 as 2; be explicit


class StoreError(Exception):
    """A database operation failed; one line naming the DB and the operation, never a secret."""


def describe_conninfo(dsn: str | None) -> str:
    """``host=... port=... dbname=...`` from a DSN, without user secrets, for messages."""
    if not dsn:
        return "database (no dsn)"
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "database (unparsable dsn)"
    return _describe(params.get("host") or params.get("hostaddr"), params.get("port"), params.get("dbname"))


def _describe(host: Any, port: Any, dbname: Any) -> str:
    """The common format of a DB target: ``db host:port/dbname`` (socket dirs are paths)."""
    target = f"{host or 'localhost'}"
    if port:
        target += f":{port}"
    return f"database {target}/{dbname or '?'}"


def describe_connection(conn: psycopg.Connection[Any]) -> str:
    """The target of an open (or broken) connection, for messages."""
    try:
        info = conn.info
        return _describe(info.host, info.port, info.dbname)
    except Exception:  # a finished pgconn cannot answer; the message still needs a target
        return "database (connection lost)"


def redact(text: str, *secrets: str | None) -> str:
    """First line of ``text`` with every given secret replaced, so a message can be logged."""
    line = (text.strip().splitlines() or [""])[0]
    for s in secrets:
        if s:
            line = line.replace(s, "<redacted>")
    return line


def store_error(target: str, operation: str, exc: BaseException, *secrets: str | None) -> StoreError:
    """Build the one-line StoreError for ``operation`` on ``target`` from a driver error."""
    kind = type(exc).__name__
    text = f"{target}: {operation} failed: {kind}: {redact(str(exc), *secrets) or 'no detail'}"
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        text += f" ({_lock_wait(exc)})"
    return StoreError(text)


# a table after FROM/INTO/UPDATE/TABLE (not "extract(epoch FROM column)"), or our function
_TARGET = re.compile(r"\b(?:FROM|INTO|UPDATE|TABLE)\s+(\w+)\b(?!\s*\))|\b(wgsyncd_\w+)\(", re.IGNORECASE)


def waited_in(exc: psycopg.errors.LockNotAvailable, sql: str) -> None:
    """Remember on ``exc`` the table or function of the statement whose lock wait timed out:
    PostgreSQL names a row lock's relation in the error context, but not a table lock's."""
    m = _TARGET.search(sql)
    if m:
        exc.wgsyncd_waited_in = m.group(1) or m.group(2)  # type: ignore[attr-defined]


def _lock_wait(exc: psycopg.errors.LockNotAvailable) -> str:
    """What a lock_timeout cut short: the row lock's relation and tuple from the server's
    error context, else the table or function of the statement (``waited_in``)."""
    lines = (getattr(exc.diag, "context", None) or "").splitlines()
    where = next((ln.strip() for ln in lines if "relation" in ln), None)
    if where:
        return f"waited {where}; another session holds it"
    target = getattr(exc, "wgsyncd_waited_in", None)
    if target:
        return f"waited for a lock on {target} that another session (a migration, a DBA) holds"
    return "waited for a lock another session holds longer than lock_timeout"


_VERIFIED = ("verify-full", "verify-ca")


def _is_local(host: str) -> bool:
    """A unix socket (a path, an abstract socket, or libpq's default) or a loopback address."""
    if not host or host.startswith(("/", "@")) or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a DNS name other than localhost: whatever it resolves to, it is remote


def transport_problem(cfg: DatabaseConfig, environ: dict[str, str] | None = None) -> str | None:
    """Why the DSN's transport is not acceptable for a remote database, or None.

    Every TCP target other than loopback (libpq's host/hostaddr lists, else $PGHOST)
    needs sslmode verify-full or verify-ca: anything weaker checks no certificate and
    ``prefer`` (libpq's default) silently falls back to clear text.
    """
    env = os.environ if environ is None else environ
    try:
        params = conninfo_to_dict(cfg.dsn or "")
    except psycopg.Error:
        return None  # connect() reports an unparsable DSN
    hosts = params.get("hostaddr") or params.get("host") or env.get("PGHOSTADDR") or env.get("PGHOST") or ""
    remote = [h for h in str(hosts).split(",") if not _is_local(h.strip())]
    sslmode = str(params.get("sslmode") or env.get("PGSSLMODE") or "prefer")
    if not remote or sslmode in _VERIFIED:
        return None
    return (
        f"database.dsn: sslmode={sslmode} to TCP host {remote[0]} (not loopback) does not verify the "
        "server; set sslmode=verify-full (and sslrootcert) or database.allow_insecure_transport = true"
    )


def check_transport(cfg: DatabaseConfig) -> None:
    """Refuse an unverified remote transport (StoreError naming the setting), or warn when allowed."""
    problem = transport_problem(cfg)
    if problem is None:
        return
    if not cfg.allow_insecure_transport:
        raise StoreError(problem)
    log.warning("%s (allowed: database.allow_insecure_transport = true)", problem.split("; set ")[0])


def connect(cfg: DatabaseConfig, application_name: str = "wgsyncd") -> psycopg.Connection[Any]:
    """Open a session with keepalives; autocommit off; every transaction under the timeouts.

    Nothing is session state (store/pooled.py), so pgbouncer in transaction mode works:
    the timeouts and UTC are set per transaction, not as startup ``options``. The
    password travels as its own parameter (never inside a string we might log);
    any failure becomes a StoreError naming host/socket and dbname only.
    """
    target = describe_conninfo(cfg.dsn)
    if not cfg.dsn:
        raise StoreError("database.dsn: not set; cannot connect")
    password = cfg.password.reveal() if cfg.password else None
    try:
        params = conninfo_to_dict(cfg.dsn)
    except psycopg.Error as exc:
        raise StoreError(f"database.dsn: not a valid libpq conninfo or URI ({type(exc).__name__})") from None
    dsn_password = params.get("password")
    check_transport(cfg)
    for key in ("sslcert", "sslkey", "sslrootcert"):
        if getattr(cfg, key, None) and not params.get(key):
            params[key] = getattr(cfg, key)
    params["connect_timeout"] = max(_LIBPQ_MIN_CONNECT_TIMEOUT, math.ceil(cfg.connect_timeout))
    params["application_name"] = application_name
    for key, value in _KEEPALIVES.items():
        params.setdefault(key, value)
    # unacknowledged writes to a vanished DB host fail after this instead of hanging for
    # minutes in TCP retransmits (the server-side statement_timeout cannot help then)
    params.setdefault("tcp_user_timeout", int(max(10.0, cfg.statement_timeout + 5) * 1000))
    if password is not None:
        params["password"] = password
    limits = pooled.Limits.for_statement_timeout(cfg.statement_timeout)
    try:
        conn = pooled.connect(make_conninfo(**params), limits)
    except psycopg.Error as exc:
        raise store_error(target, "connect", exc, password, dsn_password) from None
    return conn


@contextmanager
def guarded(conn: psycopg.Connection[Any], operation: str) -> Iterator[None]:
    """Run ``operation`` so a driver error rolls back and surfaces as a one-line StoreError."""
    if conn.info.transaction_status == pq.TransactionStatus.INERROR:
        conn.rollback()
    if conn.info.transaction_status != pq.TransactionStatus.IDLE and not conn.closed:
        raise StoreError(
            f"{describe_connection(conn)}: {operation}: the connection has an open transaction; "
            "commit or roll it back first"
        )
    try:
        yield
    except psycopg.Error as exc:
        target = describe_connection(conn)
        try:
            if not conn.closed:
                conn.rollback()
        except psycopg.Error:
            pass
        raise store_error(target, operation, exc) from None
