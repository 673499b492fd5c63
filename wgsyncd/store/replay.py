"""What replaying the spool needs from the database beyond write_cycle: which cycles are in.

Replay is idempotent through the sync id: write_cycle commits a cycle's
sync_status row in the same transaction as its rows, so "a non-failed
sync_status row with this sync id exists" means "this cycle is in the database,
all of it". A replay interrupted after the COMMIT but before the spool forgot the
entry (another outage, SIGTERM, a crash) finds it here and skips it. A
``failed`` row (record_failure after a refused write) does not count: the rows
of that cycle were rolled back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from wgsyncd.store.db import guarded


def committed(
    conn: psycopg.Connection[Any], host_id: str, sync_ids: Sequence[uuid.UUID], since: datetime
) -> set[uuid.UUID]:
    """The sync ids among ``sync_ids`` whose cycle is committed for ``host_id``.

    ``since``: the earliest started_at among them (the host/time index does the rest).
    """
    if not sync_ids:
        return set()
    with guarded(conn, f"spool replay check for host {host_id}"), conn.transaction():
        rows = conn.execute(
            "SELECT sync_id FROM sync_status WHERE host_id = %s AND started_at >= %s "
            "AND sync_id = ANY(%s::uuid[]) AND status <> 'failed'",
            (host_id, since, list(sync_ids)),
        ).fetchall()
    return {r[0] for r in rows}
