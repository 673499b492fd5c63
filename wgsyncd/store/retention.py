"""Retention: traffic history and sync_status rows older than the configured age go away.

Both tables grow every cycle (a 10,000-peer host with 10% active peers adds about
1,000 traffic rows a minute), so a shared database serving many hosts needs them
bounded. Each host prunes only its own rows, a bounded batch per cycle and in its
own short transaction, so a large backlog is worked off over several cycles instead
of one long delete holding locks. Config rows and config versions are never pruned:
restore needs them.
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


def prune(conn: psycopg.Connection[Any], host_id: str, now: datetime, keep_days: float) -> Pruned:
    """Delete up to BATCH rows per table older than ``keep_days`` for ``host_id``; 0 days = keep all."""
    out = Pruned()
    if keep_days <= 0:
        return out
    cutoff = now - timedelta(days=keep_days)
    with guarded(conn, "prune history"), conn.transaction():
        # the schema owner's function (migration 0003): a host role has no DELETE
        row = conn.execute(
            "SELECT traffic, status FROM wgsyncd_prune(%s, %s, %s)", (host_id, cutoff, BATCH)
        ).fetchone()
    if row is not None:
        out.traffic, out.status = int(row[0]), int(row[1])
    return out
