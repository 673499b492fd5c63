"""What the store gives back: typed rows for status, drift, tests and (later) restore.

Readers run in their own short transaction and leave the connection idle, so a
caller can read and then write on the same connection.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg.rows import class_row

from wgsyncd.store.db import guarded

# the config columns, in the order the writer compares and writes them
INTERFACE_FIELDS = (
    "public_key",
    "listen_port",
    "fwmark",
    "addresses",
    "dns",
    "mtu",
    "table_name",
    "pre_up",
    "post_up",
    "pre_down",
    "post_down",
    "save_config",
    "conf_path",
    "conf_sha256",
    "implementation",
    "comments",
    "sources",
    "provenance",
)
PEER_FIELDS = (
    "name",
    "comments",
    "allowed_ips",
    "endpoint",
    "persistent_keepalive",
    "disabled",
    "has_preshared_key",
    "preshared_key_fp",
    "has_private_key",
    "private_key_fp",
    "sources",
    "provenance",
)


@dataclass
class InterfaceRow:
    """One row of ``interfaces`` (arrays as lists, provenance as a dict)."""

    host_id: str
    name: str
    public_key: str | None
    listen_port: int | None
    fwmark: int | None
    addresses: list[str] | None
    dns: list[str] | None
    mtu: int | None
    table_name: str | None
    pre_up: list[str] | None
    post_up: list[str] | None
    pre_down: list[str] | None
    post_down: list[str] | None
    save_config: bool | None
    conf_path: str | None
    conf_sha256: str | None
    implementation: str | None
    comments: list[str] | None
    sources: list[str]
    provenance: dict[str, str]
    row_hash: str
    version: int
    created_at: datetime
    updated_at: datetime
    removed_at: datetime | None


@dataclass
class PeerRow:
    """One row of ``peers``: config only; counters are in PeerStatsRow."""

    host_id: str
    interface: str
    public_key: str
    name: str | None
    comments: list[str] | None
    allowed_ips: list[str] | None
    endpoint: str | None
    persistent_keepalive: int | None
    disabled: bool | None
    has_preshared_key: bool | None
    preshared_key_fp: str | None
    has_private_key: bool | None
    private_key_fp: str | None
    sources: list[str]
    provenance: dict[str, str]
    row_hash: str
    version: int
    created_at: datetime
    updated_at: datetime
    removed_at: datetime | None


@dataclass
class ServerKeyRow:
    """One public key an interface has had."""

    host_id: str
    interface: str
    public_key: str
    fingerprint: str
    first_seen: datetime
    last_seen: datetime
    retired_at: datetime | None


@dataclass
class PeerStatsRow:
    """Last raw counters and the monotonic totals of one peer."""

    host_id: str
    interface: str
    public_key: str
    latest_handshake: datetime | None
    rx_bytes: int
    tx_bytes: int
    rx_total: int
    tx_total: int
    observed_at: datetime


@dataclass
class StatusRow:
    """One sync attempt as recorded in ``sync_status``."""

    id: int
    host_id: str
    sync_id: uuid.UUID
    started_at: datetime
    finished_at: datetime
    status: str  # ok | partial | failed
    errors: list[str]
    message: str | None
    drift_count: int
    drift: list[dict[str, Any]]
    interfaces: int
    peers: int
    config_rows_written: int
    duration_ms: int
    agent_version: str


T = TypeVar("T")

# a row stores its drift list only when it changed (migration 0003); NULL means "the
# same as the newest row of this host with that hash and a stored list"
_STORED_DRIFT = (
    "coalesce(sync_status.drift, (SELECT d.drift FROM sync_status d WHERE d.host_id = sync_status.host_id "
    "AND d.drift_sha256 = sync_status.drift_sha256 AND d.drift IS NOT NULL "
    "ORDER BY d.started_at DESC LIMIT 1), '[]'::jsonb) AS drift"
)


def _columns(cls: type[Any]) -> str:
    """The SELECT list for a row dataclass; totals cast so they come back as int, not Decimal."""
    cols = []
    for f in dataclasses.fields(cls):
        if cls is StatusRow and f.name == "drift":
            cols.append(_STORED_DRIFT)
            continue
        cols.append(f"{f.name}::bigint AS {f.name}" if f.name in ("rx_total", "tx_total") else f.name)
    return ", ".join(cols)


def _select(conn: psycopg.Connection[Any], cls: type[T], operation: str, sql: str, params: Any) -> list[T]:
    """Run one read in its own transaction and map rows onto ``cls``."""
    with guarded(conn, operation), conn.transaction(), conn.cursor(row_factory=class_row(cls)) as cur:
        cur.execute(sql.replace("{cols}", _columns(cls)), params)
        return cur.fetchall()


def load_interfaces(conn: psycopg.Connection[Any], host_id: str) -> list[InterfaceRow]:
    """All interface rows of a host, removed ones included (check ``removed_at``)."""
    return _select(
        conn,
        InterfaceRow,
        "load_interfaces",
        "SELECT {cols} FROM interfaces WHERE host_id = %s ORDER BY name",
        (host_id,),
    )


def load_peers(
    conn: psycopg.Connection[Any], host_id: str, interface: str | None = None, *, include_removed: bool = True
) -> list[PeerRow]:
    """Peer rows of a host (or one interface), ordered by interface and public key."""
    sql = "SELECT {cols} FROM peers WHERE host_id = %s"
    params: list[Any] = [host_id]
    if interface is not None:
        sql += " AND interface = %s"
        params.append(interface)
    if not include_removed:
        sql += " AND removed_at IS NULL"
    return _select(conn, PeerRow, "load_peers", sql + " ORDER BY interface, public_key", params)


def load_server_keys(conn: psycopg.Connection[Any], host_id: str) -> list[ServerKeyRow]:
    """Every public key the host's interfaces have had, current ones with retired_at NULL."""
    return _select(
        conn,
        ServerKeyRow,
        "load_server_keys",
        "SELECT {cols} FROM server_keys WHERE host_id = %s ORDER BY interface, first_seen, public_key",
        (host_id,),
    )


def load_peer_stats(conn: psycopg.Connection[Any], host_id: str) -> list[PeerStatsRow]:
    """The last counters and totals of every peer of a host."""
    return _select(
        conn,
        PeerStatsRow,
        "load_peer_stats",
        "SELECT {cols} FROM peer_stats WHERE host_id = %s ORDER BY interface, public_key",
        (host_id,),
    )


def status(conn: psycopg.Connection[Any], host_id: str | None = None, limit: int = 10) -> list[StatusRow]:
    """The newest sync attempts (of one host, or of all hosts), newest first."""
    where = "WHERE host_id = %s " if host_id is not None else ""
    params: tuple[Any, ...] = (host_id, limit) if host_id is not None else (limit,)
    return _select(
        conn,
        StatusRow,
        "status",
        "SELECT {cols} FROM sync_status " + where + "ORDER BY started_at DESC, id DESC LIMIT %s",
        params,
    )
