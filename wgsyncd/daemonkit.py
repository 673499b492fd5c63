"""The daemon's helpers that hold no loop state: systemd notify and watchdog, timing, connect.

Why apart from daemon.py: the loop (daemon.Daemon) stays a short read of what happens
each cycle; these pieces are pure functions or thin wrappers it calls, each testable alone.
"""

from __future__ import annotations

import logging
import os
import random
import select
import signal
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from wgsyncd import config as config_mod
from wgsyncd import heartbeat, logs

log = logging.getLogger("wgsyncd.daemon")

# (dotted key, getter) of every timeout that bounds one network or DB call
TIMEOUT_KEYS: tuple[tuple[str, Callable[[config_mod.Config], float]], ...] = (
    ("database.connect_timeout", lambda c: c.database.connect_timeout),
    ("database.statement_timeout", lambda c: c.database.statement_timeout),
    ("wgrest.timeout", lambda c: c.wgrest.timeout),
    ("kernel.timeout", lambda c: c.kernel.timeout),
)


class CycleAbandoned(BaseException):
    """Raised from the SIGTERM handler to unwind a running cycle.

    A BaseException, so no ``except Exception`` in a source or the store can
    swallow it; not a KeyboardInterrupt, so psycopg does not wait for a cancel
    round-trip to a server that may be the very thing hanging.
    """


class Report(Protocol):
    """What the daemon needs of cycle.CycleReport."""

    status: str
    errors: list[str]

    def summary(self) -> str: ...


SyncFn = Callable[[config_mod.Config, Any, uuid.UUID], Report]
ConnectFn = Callable[[config_mod.Config], Any]


class Notifier:
    """sd_notify through the sdnotify library; silent when NOTIFY_SOCKET is unset."""

    def __init__(self) -> None:
        import sdnotify

        self._enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self._enabled else None

    def send(self, *fields: str) -> None:
        """Send KEY=VALUE fields as one datagram (systemd applies them together)."""
        if self._notifier is None:
            return
        # sdnotify encodes latin-1: keep STATUS= text ASCII
        text = "\n".join(f.encode("ascii", "replace").decode() for f in fields)
        self._notifier.notify(text)


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """WatchdogSec in seconds when systemd asked *this* process for pings, else None."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1e6


def timeout_warnings(cfg: config_mod.Config, watchdog: float | None) -> list[str]:
    """One message per timeout that is not below half of WatchdogSec (empty when fine)."""
    if watchdog is None:
        return []
    limit = watchdog / 2
    return [
        f"{key}: {get(cfg):g} s is not below half of WatchdogSec ({limit:g} s); "
        "a call hanging that long will trip the watchdog"
        for key, get in TIMEOUT_KEYS
        if get(cfg) >= limit
    ]


def next_interval(cfg: config_mod.DaemonConfig, rng: random.Random) -> float:
    """The wait before the next cycle: interval +- jitter, so a fleet spreads out."""
    spread = cfg.interval * cfg.jitter
    return max(0.0, cfg.interval + rng.uniform(-spread, spread))


def backoff_delay(cfg: config_mod.DaemonConfig, failures: int) -> float:
    """Exponential backoff after ``failures`` consecutive DB failures, capped at backoff_max."""
    exponent = min(max(failures - 1, 0), 60)  # 2**60 s is already far above any cap
    return min(cfg.backoff_max, cfg.backoff_initial * (2**exponent))


def _db_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the database failed", not "our code is broken"."""
    import psycopg

    errors: list[type[BaseException]] = [psycopg.Error]
    try:
        from wgsyncd import store

        errors.append(store.StoreError)
    except (ImportError, AttributeError):
        pass
    return tuple(errors)


def _default_connect(cfg: config_mod.Config) -> Any:
    """Open the store's connection; check (or, if configured, migrate) the schema, as `wgsyncd sync` does."""
    from wgsyncd import store

    conn = store.connect(cfg.database)
    try:
        store.prepare(conn, cfg.database.auto_migrate)
    except BaseException:
        _close_quietly(conn)
        raise
    return conn


def _close_quietly(conn: Any) -> None:
    """Close a connection, whatever state it is in; an open transaction is rolled back by the server.

    Closing (not ROLLBACK) because the server may be the thing that hangs: a
    ROLLBACK would wait for it, closing the socket does not.
    """
    if conn is None:
        return
    try:
        conn.close()
    except Exception as exc:  # the connection is being thrown away either way
        log.debug("closing the DB connection failed: %s", type(exc).__name__)


@dataclass
class _Wake:
    """A self-pipe the signal module writes to, so a sleeping loop wakes on any signal."""

    reader: socket.socket
    writer: socket.socket

    @classmethod
    def install(cls) -> _Wake:
        """Create the pair and hand the write end to signal.set_wakeup_fd."""
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        return cls(reader, writer)

    def wait(self, timeout: float) -> None:
        """Block until a signal arrives or ``timeout`` passes; drain what the signals wrote."""
        ready, _, _ = select.select([self.reader], [], [], max(timeout, 0.0))
        if ready:
            try:
                while self.reader.recv(512):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        """Give the wakeup fd back and close both ends."""
        signal.set_wakeup_fd(-1)
        self.reader.close()
        self.writer.close()


def load_config(path: str | None) -> config_mod.Config:
    """config.load plus what the daemon cannot run without (a database DSN)."""
    cfg = config_mod.load(path)
    if not cfg.database.dsn:
        raise config_mod.ConfigError("database.dsn: not set (the daemon has nowhere to sync to)")
    from wgsyncd.store.db import transport_problem

    problem = transport_problem(cfg.database)  # a remote DB without a verified certificate
    if problem and not cfg.database.allow_insecure_transport:
        raise config_mod.ConfigError(problem)
    return cfg


def apply_config_side_effects(cfg: config_mod.Config, log_level: str | None, watchdog: float | None) -> None:
    """Log level, log context, secrets to redact, and the timeout-vs-watchdog warnings."""
    logs.set_level(log_level or cfg.log_level)
    logs.set_context(wgsyncd_host=cfg.host_id)
    logs.register_secret(cfg.database.password)
    logs.register_secret(cfg.wgrest.token)
    for warning in timeout_warnings(cfg, watchdog):
        log.warning("%s", warning)


def write_beat(state_dir: str, beat: heartbeat.Heartbeat, last_error: str | None) -> str | None:
    """Write last-cycle.json; the error now (None: written). A warning when that starts or stops failing."""
    try:
        heartbeat.write(state_dir, beat)
    except OSError as exc:
        error = exc.strerror or type(exc).__name__
        if error != last_error:
            log.warning(
                "cannot write the last-cycle file in %s: %s; `wgsyncd status --local` "
                "will see a stale heartbeat (syncing goes on)",
                state_dir,
                error,
            )
        return error
    if last_error:
        log.warning("the last-cycle file in %s is writable again", state_dir)
    return None


def signing_key_ready(cfg: config_mod.Config, notifier: Notifier) -> bool:
    """Load (or make, on first start) the host signing key; False (logged, told to systemd) if broken."""
    from wgsyncd import signing

    try:
        key = signing.load_or_create(cfg.daemon.state_dir)
    except signing.SigningError as exc:
        log.error("%s", exc)
        notifier.send(f"STATUS={exc}")
        return False
    log.info("host signing key %s: verify key %s", key.path, key.verify_key)
    return True


def record_failure(conn: Any, cfg: config_mod.Config, sync_id: uuid.UUID, started: Any, reason: str) -> None:
    """A failed row in sync_status, so `wgsyncd status` shows the failure too (best effort).

    Within the DB deadline: the database just failed us once, it may well hang now.
    """
    from wgsyncd import __version__, cycle, store
    from wgsyncd.store import deadline

    try:
        with deadline.deadline(conn, cycle.db_budget(cfg), "record_failure"):
            store.record_failure(conn, cfg.host_id, sync_id, started, reason, __version__)
    except Exception as exc:  # the DB just failed us once; a second failure only gets logged
        log.warning("could not record the failed cycle in the database: %s", exc)
