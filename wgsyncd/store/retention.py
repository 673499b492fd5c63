"""Retention: traffic history and sync_status rows older than the configured age go away,
and traffic older than the detail window is folded into one row per peer per hour.

Both tables grow every cycle (a 10,000-peer host with 10% active peers adds about
1,000 traffic rows a minute), so a shared database serving many hosts needs them
bounded. Each host prunes only its own rows, a bounded batch per cycle and in its
own short transaction, so a large backlog is worked off over several cycles instead
of one long delete holding locks. Config rows and config versions are never pruned:
restore needs them.

The fold (migration 0010): at a 60 s interval a peer's traffic past the first day
(``traffic_detail_hours``) costs one row an hour instead of sixty; sums between hours
stay exact. Without it one PostgreSQL cannot hold a large fleet's 90 days (README,
fleet benchmark: 16 TB at 10,000 hosts).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from wgsyncd.store.db import guarded

BATCH = 20_000  # rows per table per call
# A whole pass folds traffic oldest first, one WINDOW of rows per statement, for at most
# WALK_SECONDS (then BATCH rows or the boundary end it sooner), and the next call goes on
# where it stopped. Why: a statement over the whole history scans every hour row already
# made before it reaches the rows still to fold, again at every call, so a call costs more
# the longer the history (90 days of rows from before schema 10: millions of index
# entries); over one window it scans at most a day of them, each once per pass. Measured,
# 1,000 peers x 6 days of per-minute rows (8.6M, index plans as in a shared table): 433
# calls of 20,000 rows, 80.9 s -> 69.4 s in all, the longest call 0.42 s -> 0.29 s.
WINDOW = timedelta(days=1)
WALK_SECONDS = 0.5


@dataclass
class Pruned:
    """Rows removed by one call."""

    traffic: int = 0
    status: int = 0
    folded: int = 0  # per-cycle traffic rows folded into hour rows
    thinned: int = 0  # sync_status rows past the status window that said nothing new
    # a whole pass: where the next one goes on (its boundary once it got there), and
    # whether it stopped before the boundary
    resume: datetime | None = None
    walking: bool = False

    def backlog(self) -> bool:
        """A full batch came back somewhere, or a whole pass is not through: call again soon."""
        return self.walking or max(self.traffic, self.status, self.folded, self.thinned) >= BATCH


@dataclass(frozen=True)
class Hourly:
    """Where per-cycle history becomes hourly (migration 0010); ``lookback`` bounds the scan
    back from each boundary (None: the whole history, traffic from ``resume`` on, or from
    the host's oldest row)."""

    traffic_after: timedelta  # per-cycle traffic rows older than this are folded
    status_after: timedelta  # sync_status rows older than this are thinned
    lookback: timedelta | None = None
    resume: datetime | None = None


def prune(
    conn: psycopg.Connection[Any],
    host_id: str,
    now: datetime,
    keep_days: float,
    hourly: Hourly | None = None,
) -> Pruned:
    """Delete up to BATCH rows per table older than ``keep_days`` for ``host_id`` (0 days =
    keep all); with ``hourly``, fold and thin up to BATCH rows each; one transaction."""
    out = Pruned()
    if keep_days <= 0 and hourly is None:
        return out
    with guarded(conn, "prune history"), conn.transaction():
        # the schema owner's functions (migrations 0003, 0010): a host role has no DELETE
        if keep_days > 0:
            row = conn.execute(
                "SELECT traffic, status FROM wgsyncd_prune(%s, %s, %s)",
                (host_id, now - timedelta(days=keep_days), BATCH),
            ).fetchone()
            if row is not None:
                out.traffic, out.status = int(row[0]), int(row[1])
        if hourly is not None:
            before = now - hourly.traffic_after
            if hourly.lookback is None:
                out.folded, out.resume, out.walking = _walk(conn, host_id, hourly.resume, before)
            else:
                out.folded = _call(conn, "wgsyncd_rollup_traffic", host_id, before - hourly.lookback, before)
            before = now - hourly.status_after
            since = None if hourly.lookback is None else before - hourly.lookback
            out.thinned = _call(conn, "wgsyncd_thin_status", host_id, since, before)
    return out


def _walk(
    conn: psycopg.Connection[Any], host_id: str, start: datetime | None, before: datetime
) -> tuple[int, datetime | None, bool]:
    """A whole pass's traffic fold from ``start`` (None: the host's oldest row) towards
    ``before``, oldest first, a WINDOW per statement (see WINDOW). Returns the rows
    folded, where the next call goes on, and whether it stopped short of ``before``."""
    if start is None:
        row = conn.execute(
            "SELECT min(observed_at) FROM peer_traffic WHERE host_id = %s AND observed_at < %s",
            (host_id, before),
        ).fetchone()
        if row is None or row[0] is None:
            return 0, before, False
        start = row[0]
    folded, until = 0, time.monotonic() + WALK_SECONDS
    while start < before:
        end = min(start + WINDOW, before)
        asked = BATCH - folded
        folded += (got := _call(conn, "wgsyncd_rollup_traffic", host_id, start, end, asked))
        if got >= asked:  # the window may hold more: the next call starts there again
            return folded, start, True
        start = end
        if time.monotonic() >= until:
            break
    return folded, start, start < before


def _call(
    conn: psycopg.Connection[Any],
    function: str,
    host_id: str,
    since: datetime | None,
    before: datetime,
    batch: int = BATCH,
) -> int:
    """One of 0010's functions over [since, before) (None: from the start): the rows it changed."""
    row = conn.execute(f"SELECT {function}(%s, %s, %s, %s)", (host_id, since, before, batch)).fetchone()
    return int(row[0]) if row is not None else 0
