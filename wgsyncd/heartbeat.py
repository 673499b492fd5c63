"""The daemon's last-cycle file, so a container healthcheck can ask "is the loop alive and syncing?"
without a database round trip (`wgsyncd status --local`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

FILE_NAME = "last-cycle.json"


@dataclass
class Heartbeat:
    """What the loop last did: when, how it ended, and when it means to run again."""

    time: float  # unix seconds
    status: str  # ok | partial | failed
    summary: str
    interval: float  # the configured interval, to judge staleness

    def problem(self, now: float | None = None) -> str | None:
        """Why this heartbeat is unhealthy, or None: failed last cycle, or no cycle for too long."""
        age = (time.time() if now is None else now) - self.time
        if age > max(3 * self.interval, 180.0):
            return f"last cycle {age:.0f} s ago (interval {self.interval:g} s): the loop is stuck or stopped"
        if self.status == "failed":
            return f"last cycle failed: {self.summary}"
        return None


def write(state_dir: str, beat: Heartbeat) -> None:
    """Replace the file atomically (temp file + rename), so a reader never sees half of it."""
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".last-cycle.")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(beat), fh)
        os.replace(tmp, directory / FILE_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(state_dir: str) -> Heartbeat:
    """Load the last heartbeat; OSError/ValueError when there is none or it is damaged."""
    data = json.loads((Path(state_dir) / FILE_NAME).read_text())
    return Heartbeat(
        time=float(data["time"]),
        status=str(data["status"]),
        summary=str(data["summary"]),
        interval=float(data["interval"]),
    )
