"""The local spool: cycles read while the database is unreachable, kept until they are written.

Why: only the kernel's counters remember an outage, and they forget it at the
next restart of an interface or a peer; a peer added and removed while the
database was down is in no config version. So every cycle still reads the host,
and a cycle that cannot be written is appended here, then replayed in order,
through store.write_cycle, before the next live cycle once the database answers.

Why SQLite: it is in the standard library, an entry is durable when append()
returns (WAL, synchronous=FULL: the WAL is fsync'd at every commit), a crash
never leaves half an entry, and bounding or reading the oldest is one indexed
statement. The file is 0600 and holds no clear secret (wgsyncd/spooled.py).

Bounds (config daemon.spool_max_mb, daemon.spool_max_age): past either, the
oldest cycles are dropped with a warning naming how many and from when. A
dropped cycle costs its config changes (if they were undone later in the
outage) and, only when a counter reset fell in it, that interval's traffic.

Replay is idempotent (store/replay.py): an entry is forgotten only after its
cycle is committed, and a committed cycle is recognised by its sync id, so a
replay cut by another outage, SIGTERM or a crash resumes without duplicates.
"""

from __future__ import annotations

import datetime
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wgsyncd import spooled
from wgsyncd.state import HostState

log = logging.getLogger("wgsyncd.spool")

FILE_NAME = "spool.sqlite"
MAX_REFUSALS = 5  # a cycle the database refuses this often (connection alive) is dropped
_BATCH = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cycles (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    sync_id       TEXT NOT NULL UNIQUE,
    host_id       TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    collected_at  REAL NOT NULL,
    recovery_key  TEXT,
    refusals      INTEGER NOT NULL DEFAULT 0,
    size          INTEGER NOT NULL,
    body          BLOB NOT NULL
)
"""


@dataclass(frozen=True)
class Depth:
    """How much waits in the spool: cycles, bytes, and when the oldest was read (unix s)."""

    cycles: int
    bytes: int
    oldest: float | None


@dataclass(frozen=True)
class Entry:
    """One spooled cycle."""

    id: int
    sync_id: uuid.UUID
    host_id: str
    started_at: datetime.datetime
    recovery_key: str | None
    refusals: int
    body: bytes


class SpoolError(Exception):
    """The spool file cannot be opened or written (one line naming the file)."""


class Spool:
    """One SQLite journal of unwritten cycles in the state directory."""

    def __init__(self, state_dir: str, max_bytes: int, max_age: float) -> None:
        self.path = Path(state_dir) / FILE_NAME
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.dropped = 0  # cycles dropped by the bounds since this process started
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            os.chmod(self.path, 0o600)
            self.db = sqlite3.connect(str(self.path), timeout=5.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            with self.db:
                self.db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"{self.path}: cannot open the spool: {_why(exc)}") from None

    def close(self) -> None:
        """Close the file (entries are already durable)."""
        self.db.close()

    # -- writing -----------------------------------------------------------------
    def append(
        self, state: HostState, sync_id: uuid.UUID, started: datetime.datetime, recovery_key: str | None
    ) -> None:
        """Keep one unwritten cycle (durable on return); then enforce the bounds."""
        body = spooled.encode(state, recovery_key)
        try:
            with self.db:
                self.db.execute(
                    "INSERT OR IGNORE INTO cycles (sync_id, host_id, started_at, collected_at, recovery_key, "
                    "size, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        str(sync_id),
                        state.host_id,
                        started.isoformat(),
                        state.collected_at.timestamp(),
                        recovery_key,
                        len(body),
                        body,
                    ),
                )
        except sqlite3.Error as exc:
            raise SpoolError(f"{self.path}: cannot spool the cycle: {_why(exc)}") from None
        self.enforce_bounds()

    def enforce_bounds(self, now: float | None = None) -> int:
        """Drop the oldest cycles past the size or age bound, with a warning; return how many."""
        now = time.time() if now is None else now
        drop: list[tuple[int, float]] = []
        rows = self.db.execute("SELECT id, collected_at, size FROM cycles ORDER BY id DESC").fetchall()
        total = 0
        for n, (row_id, at, size) in enumerate(rows):
            total += size
            # the newest cycle is always kept, whatever its size
            if n and (total > self.max_bytes or now - at > self.max_age):
                drop.append((row_id, at))
        if not drop:
            return 0
        with self.db:
            self.db.executemany("DELETE FROM cycles WHERE id = ?", [(d[0],) for d in drop])
        self.dropped += len(drop)
        first, last = min(d[1] for d in drop), max(d[1] for d in drop)
        log.warning(
            "spool over its bound (daemon.spool_max_mb %g, daemon.spool_max_age %g s): dropped the %d "
            "oldest unwritten cycle(s), read %s .. %s; config changes only in them are lost, and "
            "traffic only where a counter reset fell in them",
            self.max_bytes / 1e6,
            self.max_age,
            len(drop),
            _iso(first),
            _iso(last),
        )
        return len(drop)

    # -- reading -----------------------------------------------------------------
    def depth(self) -> Depth:
        """Cycles, bytes and the oldest read time now in the spool."""
        row = self.db.execute(
            "SELECT count(*), coalesce(sum(size), 0), min(collected_at) FROM cycles"
        ).fetchone()
        return Depth(int(row[0]), int(row[1]), row[2])

    def oldest(self, limit: int = _BATCH) -> list[Entry]:
        """The oldest ``limit`` entries, in the order they were read."""
        rows = self.db.execute(
            "SELECT id, sync_id, host_id, started_at, recovery_key, refusals, body FROM cycles "
            "ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            Entry(r[0], uuid.UUID(r[1]), r[2], datetime.datetime.fromisoformat(r[3]), r[4], r[5], bytes(r[6]))
            for r in rows
        ]

    def forget(self, entry_id: int) -> None:
        """The entry is in the database (or dropped on purpose): delete it, durably."""
        with self.db:
            self.db.execute("DELETE FROM cycles WHERE id = ?", (entry_id,))

    def refused(self, entry_id: int) -> None:
        """The database answered and refused this entry once more."""
        with self.db:
            self.db.execute("UPDATE cycles SET refusals = refusals + 1 WHERE id = ?", (entry_id,))


def _why(exc: BaseException) -> str:
    """One line for an OSError / sqlite3 error."""
    return getattr(exc, "strerror", None) or str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _iso(unix: float) -> str:
    """A unix time as UTC ISO text, to the second."""
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).isoformat(timespec="seconds")


def replay(
    spool: Spool,
    conn: Any,
    host_id: str,
    write: Callable[[HostState, Entry], None],
    progress: Callable[[], None] = lambda: None,
) -> int:
    """Write every spooled cycle of ``host_id``, oldest first; return how many went in.

    ``write(state, entry)`` writes one decoded cycle in one transaction (the daemon
    passes cycle.write_state with the entry's sync id and times). A database error
    propagates with the entry still spooled; one the database refused MAX_REFUSALS
    times with the connection alive is dropped with an error line, so one bad cycle
    cannot block the host forever. Entries of another host_id (the config changed)
    are dropped with a warning: this host may not write them.
    """
    from wgsyncd.store import replay as store_replay

    done = 0
    while True:
        entries = spool.oldest()
        if not entries:
            return done
        mine = [e for e in entries if e.host_id == host_id]
        already = store_replay.committed(
            conn, host_id, [e.sync_id for e in mine], min((e.started_at for e in mine), default=_EPOCH)
        )
        for e in entries:
            if e.host_id != host_id:
                log.warning(
                    "spooled cycle %s is for host_id %s, not %s: dropped", e.sync_id, e.host_id, host_id
                )
            elif e.sync_id in already:
                log.info("spooled cycle %s was already written; forgetting it", e.sync_id)
            elif e.refusals >= MAX_REFUSALS:
                log.error("spooled cycle %s refused %d times by the database: dropped", e.sync_id, e.refusals)
            else:
                _write_one(spool, conn, e, write)
                done += 1
            spool.forget(e.id)
            progress()


def _write_one(spool: Spool, conn: Any, e: Entry, write: Callable[[HostState, Entry], None]) -> None:
    """Decode and write one entry; count a refusal when the database answered and said no."""
    try:
        state = spooled.decode(e.body)
    except (ValueError, KeyError, TypeError) as exc:
        log.error("spooled cycle %s cannot be read (%s): dropped", e.sync_id, exc)
        return
    try:
        write(state, e)
    except Exception:
        if conn is not None and not conn.closed and not getattr(conn, "broken", False):
            spool.refused(e.id)
        raise


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
