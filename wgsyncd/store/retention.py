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

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from wgsyncd.store.db import guarded

BATCH = 20_000  # rows per table per call


@dataclass
class Pruned:
    """Rows removed by one call."""

    traffic: int = 0
    status: int = 0
    folded: int = 0  # per-cycle traffic rows folded into hour rows
    thinned: int = 0  # sync_status rows past the status window that said nothing new

    def backlog(self) -> bool:
        """A full batch came back somewhere: more is waiting, call again soon."""
        return max(self.traffic, self.status, self.folded, self.thinned) >= BATCH


@dataclass(frozen=True)
class Hourly:
    """Where per-cycle history becomes hourly (migration 0010); ``lookback`` bounds the scan
    back from each boundary (None: the whole history)."""

    traffic_after: timedelta  # per-cycle traffic rows older than this are folded
    status_after: timedelta  # sync_status rows older than this are thinned
    lookback: timedelta | None = None


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
            out.folded = _call(conn, "wgsyncd_rollup_traffic", host_id, now - hourly.traffic_after, hourly)
            out.thinned = _call(conn, "wgsyncd_thin_status", host_id, now - hourly.status_after, hourly)
    return out


def _call(
    conn: psycopg.Connection[Any], function: str, host_id: str, before: datetime, hourly: Hourly
) -> int:
    """One of 0010's functions over [before - lookback, before): the rows it changed."""
    since = None if hourly.lookback is None else before - hourly.lookback
    row = conn.execute(f"SELECT {function}(%s, %s, %s, %s)", (host_id, since, before, BATCH)).fetchone()
    return int(row[0]) if row is not None else 0
