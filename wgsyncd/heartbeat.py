"""The daemon's last-cycle file, so a container healthcheck can ask "is the loop alive and syncing?"
without a database round trip (`wgsyncd status --local`).

The file is ``<state_dir>/last-cycle.json``, one JSON object replaced atomically.
Its keys are a documented interface (metrics read them too):

- ``time``: unix time the last cycle ended; ``status``: ok | partial | failed;
  ``summary``: the STATUS= line; ``interval``: the configured interval (s).
- ``phase``: what the loop is doing now: idle | reading | database | replaying;
  ``phase_since``: unix time it started. A loop stuck in "database" for longer
  than ``db_budget`` (statement_timeout + margin) is a stuck database, anywhere
  else it is a stuck loop.
- ``db_failing_since``: unix time of the first failed DB cycle in a row, or null.
- ``spool_depth``, ``spool_bytes``, ``spool_oldest`` (unix time or null): the
  local spool of cycles waiting for the database (wgsyncd/spool.py).
- ``spool_dropped``: cycles dropped from the spool since the daemon started.

Three problems look alike from outside and must not be confused, because a
healthcheck restarts the daemon on any of them: a database that does not answer
(the loop is fine: it spools), a loop that hangs, and a state directory the
daemon cannot write (the loop is fine, only this file is stale). ``problem``
tells them apart; ``probe_writable`` is how the third is recognised.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from wgsyncd.atomicfile import write_atomic

FILE_NAME = "last-cycle.json"


@dataclass
class Heartbeat:
    """What the loop last did: when, how it ended, and when it means to run again."""

    time: float  # unix seconds
    status: str  # ok | partial | failed
    summary: str
    interval: float  # the configured interval, to judge staleness
    phase: str = "idle"  # idle | reading | database | replaying
    phase_since: float | None = None
    db_budget: float = 0.0
    db_failing_since: float | None = None
    spool_depth: int = 0
    spool_bytes: int = 0
    spool_oldest: float | None = None
    spool_dropped: int = 0

    def stale_after(self) -> float:
        """Seconds without a finished cycle after which the loop counts as stuck."""
        return max(3 * self.interval, 180.0)

    def problem(self, now: float | None = None, state_dir_error: str | None = None) -> str | None:
        """Why this heartbeat is unhealthy, or None (see the module doc for the three cases)."""
        now = time.time() if now is None else now
        age = now - self.time
        in_phase = now - self.phase_since if self.phase_since is not None else 0.0
        if self.phase in ("database", "replaying") and self.db_budget and in_phase > self.db_budget + 30:
            return (
                f"stuck database: no answer for {in_phase:.0f} s in the {self.phase} phase "
                f"(deadline {self.db_budget:g} s)"
            )
        if age > self.stale_after():
            if state_dir_error:
                return (
                    f"state directory not writable ({state_dir_error}): last cycle recorded "
                    f"{age:.0f} s ago; the loop may be running"
                )
            return f"last cycle {age:.0f} s ago (interval {self.interval:g} s): the loop is stuck or stopped"
        if self.status == "failed":
            if self.db_failing_since is not None:
                return (
                    f"database failing for {now - self.db_failing_since:.0f} s: {self.summary}"
                    f"{self.spool_text(now)}"
                )
            return f"last cycle failed: {self.summary}"
        return None

    def spool_text(self, now: float | None = None) -> str:
        """``; spool: N cycles, oldest X s`` or empty when nothing is spooled."""
        if not self.spool_depth:
            return ""
        now = time.time() if now is None else now
        oldest = f", oldest {now - self.spool_oldest:.0f} s" if self.spool_oldest else ""
        return f"; spool: {self.spool_depth} cycle{'s' * (self.spool_depth != 1)}{oldest}"


def write(state_dir: str, beat: Heartbeat) -> None:
    """Replace the file atomically (temp file + rename), so a reader never sees half of it."""
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / FILE_NAME, json.dumps(asdict(beat)), 0o600)


def read(state_dir: str) -> Heartbeat:
    """Load the last heartbeat; OSError/ValueError when there is none or it is damaged."""
    data = json.loads((Path(state_dir) / FILE_NAME).read_text())
    known = {f.name for f in fields(Heartbeat)}
    beat = Heartbeat(
        time=float(data["time"]),
        status=str(data["status"]),
        summary=str(data["summary"]),
        interval=float(data["interval"]),
    )
    for key, value in data.items():
        if key in known and key not in ("time", "status", "summary", "interval"):
            setattr(beat, key, value)
    return beat


def probe_writable(state_dir: str) -> str | None:
    """None when a small file can be written and synced in ``state_dir``, else why not.

    A full filesystem often still lets a file be created; the write or fsync is what
    fails (ENOSPC), so the probe writes a few bytes and syncs them.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=".probe.")
    except OSError as exc:
        return f"{state_dir}: {exc.strerror or type(exc).__name__}"
    try:
        os.write(fd, b"x" * 4096)
        os.fsync(fd)
    except OSError as exc:
        return f"{state_dir}: {exc.strerror or type(exc).__name__}"
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return None
