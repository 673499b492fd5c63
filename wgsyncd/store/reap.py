"""`wgsyncd db reap`: end host sessions that keep a transaction open too long.

Why: one open transaction holds back vacuum in the whole database (the dead row
versions of every host stay until it ends), and a compromised host can keep one open
for ever: it may lift its own ``idle_in_transaction_session_timeout`` and
``statement_timeout`` (both are settable by any role, whatever ``ALTER ROLE`` set).
pgbouncer's ``idle_transaction_timeout`` bounds that through a pooler; for hosts that
connect directly the operator runs this from a timer. It ends only sessions of roles
in the host group, and only while they still are in the transaction it judged (same
pid, same transaction start), so a host that finished meanwhile is left alone.

Run as a role that may see and signal other roles' sessions: ``pg_read_all_stats``
and ``pg_signal_backend`` (or a superuser); without the first nothing would be seen,
so that is an error, not an empty list.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from wgsyncd.store.db import StoreError, guarded
from wgsyncd.store.roles import HOST_GROUP, terminate


@dataclass(frozen=True)
class Stuck:
    """A host session over a bound: which, whose, and for how long."""

    pid: int
    role: str
    host_id: str | None
    state: str
    state_s: float  # seconds in its current state
    xact_start: datetime
    xact_s: float  # seconds since its transaction began

    def describe(self) -> str:
        """One line for the operator."""
        who = f"role {self.role}" + (f" (host {self.host_id})" if self.host_id else "")
        return (
            f"session {self.pid} of {who}: {self.state} for {self.state_s:.0f} s, "
            f"transaction open {self.xact_s:.0f} s"
        )


_FIND = """
SELECT a.pid, a.usename, r.host_id, a.state,
       extract(epoch FROM now() - a.state_change)::float8, a.xact_start,
       extract(epoch FROM now() - a.xact_start)::float8
FROM pg_stat_activity a
JOIN pg_roles u ON u.rolname = a.usename
LEFT JOIN host_roles r ON r.role_name = a.usename
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.xact_start IS NOT NULL
  AND pg_has_role(u.oid, %(group)s, 'MEMBER') AND NOT u.rolsuper
  AND ((a.state LIKE 'idle in transaction%%' AND a.state_change <= now() - make_interval(secs => %(idle)s))
       OR a.xact_start <= now() - make_interval(secs => %(older)s))
ORDER BY a.xact_start, a.pid
"""


def _can_see(conn: psycopg.Connection[Any]) -> None:
    """Refuse when this role cannot see other roles' session states (all would look fine)."""
    row = conn.execute(
        "SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') "
        "FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if not (row and row[0]):
        raise StoreError(
            "db reap: this role cannot see other roles' sessions; a superuser runs "
            "GRANT pg_read_all_stats, pg_signal_backend TO <this role>"
        )


def stuck(conn: psycopg.Connection[Any], idle_after: float, older_than: float) -> list[Stuck]:
    """Host sessions idle in a transaction for ``idle_after`` s, or in one for ``older_than`` s."""
    with guarded(conn, "db reap: list host sessions"), conn.transaction():
        _can_see(conn)
        rows = conn.execute(_FIND, {"group": HOST_GROUP, "idle": idle_after, "older": older_than}).fetchall()
    return [Stuck(*r) for r in rows]


def end(conn: psycopg.Connection[Any], sessions: list[Stuck]) -> list[str]:
    """End each session if it is still in the same transaction; one line per session."""
    out = []
    with guarded(conn, "db reap: end host sessions"):
        for s in sessions:
            done = terminate(conn, s.pid, s.xact_start)
            if done is None:
                out.append(f"could not end {s.describe()}: this role lacks pg_signal_backend")
            else:
                verb = "ended" if done else "left alone (its transaction ended meanwhile)"
                out.append(f"{verb} {s.describe()}")
    return out
