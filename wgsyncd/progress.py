"""Progress on a terminal for long operations (persist-restore of thousands of peers, restore, first sync).

Only when stderr is a terminal: under systemd, in a container or a pipe, stderr is
the journal or a log collector, and a stream of carriage-return updates there is
noise. Nothing here is logged; it is drawn and erased.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

MIN_REDRAW = 0.1  # seconds between two redraws: thousands of updates cost nothing


def wanted(stream: TextIO | None = None, json_logs: bool = False) -> bool:
    """True when ``stream`` (stderr) is an interactive terminal and logs are not JSON."""
    s = sys.stderr if stream is None else stream
    try:
        return not json_logs and s.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """``label: done/total (pct%)`` redrawn in place on stderr; :meth:`close` ends the line."""

    def __init__(self, label: str, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.enabled = wanted(self.stream) if enabled is None else enabled
        self._last = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        """Report ``done`` of ``total``; redraws at most every MIN_REDRAW s, and always at the end."""
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self._last < MIN_REDRAW:
            return
        self._last = now
        pct = 100 * done // total if total else 100
        self.stream.write(f"\r{self.label}: {done}/{total} ({pct}%)\x1b[K")
        self.stream.flush()
        self._drawn = True

    def phase(self, text: str) -> None:
        """Show what is being done now (a step without a count)."""
        if not self.enabled:
            return
        self.stream.write(f"\r{self.label}: {text}\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the progress line so the command's own output starts on a clean line."""
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False
