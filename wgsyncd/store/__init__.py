"""The PostgreSQL store: the only place in wgsyncd that speaks SQL.

Other rooms call exactly these names: ``connect``, ``migrate``, ``write_cycle``,
``record_failure``, ``status``, ``load_interfaces``, ``load_peers`` (and the row
and report dataclasses). Every failure is a ``StoreError`` with one line naming
the database and the operation, never a password or key.
"""

from wgsyncd.store.db import StoreError, check_transport, connect, describe_conninfo
from wgsyncd.store.migrate import check_schema, migrate, prepare
from wgsyncd.store.retention import Pruned, prune
from wgsyncd.store.rows import (
    InterfaceRow,
    PeerRow,
    PeerStatsRow,
    ServerKeyRow,
    StatusRow,
    load_interfaces,
    load_peer_stats,
    load_peers,
    load_server_keys,
    status,
)
from wgsyncd.store.writer import TableCounts, WriteReport, record_failure, write_cycle

__all__ = [
    "InterfaceRow",
    "PeerRow",
    "PeerStatsRow",
    "Pruned",
    "ServerKeyRow",
    "StatusRow",
    "StoreError",
    "TableCounts",
    "WriteReport",
    "check_schema",
    "check_transport",
    "connect",
    "describe_conninfo",
    "load_interfaces",
    "load_peer_stats",
    "load_peers",
    "load_server_keys",
    "migrate",
    "prepare",
    "prune",
    "record_failure",
    "status",
    "write_cycle",
]
