"""Per-host quotas (migration 0008): what each host may hold and add to the shared database.

The database enforces them (triggers charge every new row version to its host's day);
this module is the operator's side: set or clear a host's own row, or the default row
``'*'``, and list each host's quota beside what it holds and wrote today. Run with the
schema owner's DSN: only the owner may change quotas (an operator reads them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg

from wgsyncd.store.db import StoreError, guarded
from wgsyncd.store.roles import check_name

DEFAULT = "*"
FIELDS = ("max_interfaces", "max_peers", "max_bytes_per_day")
_SIZE = re.compile(r"(\d+)\s*([KMGT]?)(i?B)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


@dataclass(frozen=True)
class HostQuota:
    """One host's quota as the triggers apply it, and what it uses of it."""

    host_id: str
    own: bool  # a row of its own; else the default row applies
    max_interfaces: int | None  # None: no row at all, no limit
    max_peers: int | None
    max_bytes_per_day: int | None
    interfaces: int  # live (not removed) rows
    peers: int
    bytes_today: int  # UTC day


def parse_size(text: str, field: str) -> int:
    """``16G``, ``512MiB``, ``1000000``: bytes (binary units); a clear error naming ``field``."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise StoreError(f"{field}: not a size (a number of bytes, or with K, M, G or T: 16G)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def set_quota(conn: psycopg.Connection[Any], host_id: str, values: dict[str, int]) -> str:
    """Create or change ``host_id``'s row ('*': the default); fields not given start from
    the default row, so a host's own row never has a gap. Returns one line for the operator."""
    if host_id != DEFAULT:
        check_name("host_id", host_id)
    bad = [k for k, v in values.items() if k not in FIELDS or v < 0]
    if bad:
        raise StoreError(f"quota: {bad[0]} must be a whole number >= 0")
    with guarded(conn, f"set quota of {host_id}"), conn.transaction():
        base = conn.execute(  # the row the triggers apply now (migration 0008)
            "SELECT max_interfaces, max_peers, max_bytes_per_day FROM wgsyncd_quota_of(%s)", (host_id,)
        ).fetchone()
        row = dict(zip(FIELDS, base or (None, None, None), strict=True)) | values
        if None in row.values():
            missing = next(k for k, v in row.items() if v is None)
            raise StoreError(f"quota: no default row to start from: give --{missing.replace('_', '-')}")
        conn.execute(
            "INSERT INTO host_quotas (host_id, max_interfaces, max_peers, max_bytes_per_day) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (host_id) DO UPDATE SET "
            "max_interfaces = EXCLUDED.max_interfaces, max_peers = EXCLUDED.max_peers, "
            "max_bytes_per_day = EXCLUDED.max_bytes_per_day",
            (host_id, row["max_interfaces"], row["max_peers"], row["max_bytes_per_day"]),
        )
    who = "default" if host_id == DEFAULT else f"host {host_id}"
    return f"{who}: " + ", ".join(f"{k} {v:,}" for k, v in row.items())


def clear_quota(conn: psycopg.Connection[Any], host_id: str) -> str:
    """Remove ``host_id``'s own row: the default applies again ('*': no default, no limit)."""
    with guarded(conn, f"clear quota of {host_id}"), conn.transaction():
        gone = conn.execute("DELETE FROM host_quotas WHERE host_id = %s", (host_id,)).rowcount
    if host_id == DEFAULT:
        return "default: removed; hosts without their own row have no limit" if gone else "default: none set"
    return f"host {host_id}: " + ("own quota removed; the default applies" if gone else "had no own quota")


_LIST = """
WITH ids AS (SELECT host_id FROM hosts UNION SELECT host_id FROM host_quotas WHERE host_id <> '*'
             UNION SELECT host_id FROM host_roles)
SELECT i.host_id, q.host_id IS NOT NULL, coalesce(q.max_interfaces, d.max_interfaces),
       coalesce(q.max_peers, d.max_peers), coalesce(q.max_bytes_per_day, d.max_bytes_per_day),
       (SELECT count(*) FROM interfaces x WHERE x.host_id = i.host_id AND x.removed_at IS NULL),
       (SELECT count(*) FROM peers p WHERE p.host_id = i.host_id AND p.removed_at IS NULL),
       coalesce((SELECT u.bytes FROM host_usage u WHERE u.host_id = i.host_id
                 AND u.day = (now() AT TIME ZONE 'UTC')::date), 0)
FROM ids i LEFT JOIN host_quotas q ON q.host_id = i.host_id
LEFT JOIN host_quotas d ON d.host_id = '*'
ORDER BY i.host_id
"""


def quotas(conn: psycopg.Connection[Any]) -> tuple[HostQuota | None, list[HostQuota]]:
    """The default row (None: none) and every known host's quota with its use today."""
    with guarded(conn, "list quotas"), conn.transaction():
        d = conn.execute(
            "SELECT max_interfaces, max_peers, max_bytes_per_day FROM host_quotas WHERE host_id = '*'"
        ).fetchone()
        rows = conn.execute(_LIST).fetchall()
    default = HostQuota(DEFAULT, True, *d, 0, 0, 0) if d else None
    return default, [HostQuota(*r) for r in rows]


def _size(n: int | None) -> str:
    """Bytes the way an operator reads them (binary units)."""
    if n is None:
        return "no limit"
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit]:
            return f"{n / _UNITS[unit]:.1f} {unit}iB"
    return f"{n} B"


def _of(used: int, limit: int | None) -> str:
    """``used / limit`` with the limit spelled out, ``!`` when it is reached."""
    if limit is None:
        return f"{used:,}/-"
    return f"{used:,}/{limit:,}" + ("!" if used >= limit else "")


def describe_default(d: HostQuota | None) -> str:
    """The default row as one line."""
    if d is None:
        return "default: none (hosts without their own quota have no limit)"
    return (
        f"default: interfaces {d.max_interfaces:,}, peers {d.max_peers:,}, {_size(d.max_bytes_per_day)} a day"
    )


def describe(r: HostQuota) -> str:
    """One host's quota and use as one line."""
    day = f"{_size(r.bytes_today)}/{_size(r.max_bytes_per_day)}"
    return (
        f"{r.host_id}  {'own' if r.own else 'default'}  interfaces {_of(r.interfaces, r.max_interfaces)}  "
        f"peers {_of(r.peers, r.max_peers)}  today {day}"
    )
