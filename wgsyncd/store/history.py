"""Reading config versions back: `wgsyncd history` and restore. No writes.

Why apart from store/versions.py: that module decides inside the writer's
transaction when a version is made; these readers each run in their own short
transaction for the operator's commands, and share nothing with the write path
but the table.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from wgsyncd.store.db import guarded


@dataclass
class VersionRow:
    """One config version without its document (for `wgsyncd history`)."""

    host_id: str
    version: int
    created_at: datetime
    sync_id: uuid.UUID
    content_sha256: str
    interfaces: int
    peers: int
    sealed: bool
    recovery_key_fp: str | None
    signing_key: str | None  # as written in the row: a hint, restore trusts only pinned keys
    prev_sha256: str | None


@dataclass
class Version(VersionRow):
    """One config version with its public document."""

    doc: dict[str, Any]


_ROW_COLS = (
    "host_id, version, created_at, sync_id, content_sha256, interfaces, peers, sealed, recovery_key_fp, "
    "signing_key, prev_sha256"
)


def host_known(conn: psycopg.Connection[Any], host_id: str) -> bool:
    """Whether the host ever synced (a row in ``hosts``)."""
    with guarded(conn, f"host lookup for {host_id}"), conn.transaction():
        return conn.execute("SELECT 1 FROM hosts WHERE host_id = %s", (host_id,)).fetchone() is not None


def list_versions(conn: psycopg.Connection[Any], host_id: str, limit: int | None = None) -> list[VersionRow]:
    """The host's versions, newest first."""
    sql = f"SELECT {_ROW_COLS} FROM config_versions WHERE host_id = %s ORDER BY version DESC"
    params: tuple[Any, ...] = (host_id,)
    if limit is not None:
        sql += " LIMIT %s"
        params = (host_id, limit)
    with (
        guarded(conn, f"history of host {host_id}"),
        conn.transaction(),
        conn.cursor(row_factory=class_row(VersionRow)) as cur,
    ):
        return cur.execute(sql, params).fetchall()


def load_version(
    conn: psycopg.Connection[Any], host_id: str, *, version: int | None = None, at: datetime | None = None
) -> Version | None:
    """One version with its doc: by number, the last one at or before ``at``, or the latest."""
    sql = f"SELECT {_ROW_COLS}, doc FROM config_versions WHERE host_id = %s"
    params: list[Any] = [host_id]
    if version is not None:
        sql += " AND version = %s"
        params.append(version)
    if at is not None:
        sql += " AND created_at <= %s"
        params.append(at)
    sql += " ORDER BY version DESC LIMIT 1"
    with (
        guarded(conn, f"load version of host {host_id}"),
        conn.transaction(),
        conn.cursor(row_factory=class_row(Version)) as cur,
    ):
        return cur.execute(sql, params).fetchone()


def first_version_time(conn: psycopg.Connection[Any], host_id: str) -> datetime | None:
    """When the host's first version was made (to explain a too-early ``--at``)."""
    with guarded(conn, f"history of host {host_id}"), conn.transaction():
        row = conn.execute(
            "SELECT min(created_at) FROM config_versions WHERE host_id = %s", (host_id,)
        ).fetchone()
    return row[0] if row else None


def load_sealed(
    conn: psycopg.Connection[Any], host_id: str, refs: dict[str, tuple[str, str]]
) -> dict[str, bytes]:
    """The sealed blobs for ``refs`` (interface -> (secrets sha256, recovery key fp)); missing left out."""
    if not refs:
        return {}
    names = sorted(refs)
    with guarded(conn, f"load sealed secrets of host {host_id}"), conn.transaction():
        rows = conn.execute(
            "SELECT s.interface, s.sealed FROM config_secrets s "
            "JOIN unnest(%s::text[], %s::text[], %s::text[]) AS r(interface, sha, fp) "
            "ON s.interface = r.interface AND s.secrets_sha256 = r.sha AND s.recovery_key_fp = r.fp "
            "WHERE s.host_id = %s",
            (names, [refs[n][0] for n in names], [refs[n][1] for n in names], host_id),
        ).fetchall()
    return {r[0]: bytes(r[1]) for r in rows}
