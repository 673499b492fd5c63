"""The operator's questions across every host, answered from the fleet views (migration 0006).

Read only, and the read side of the database: ``wgsyncd fleet ...`` and the Grafana
dashboard ask the same views, so both give the same answers. Each question is one
short READ ONLY transaction (no session state: works through pgbouncer in
transaction mode) run as whoever connects: the views are security_invoker, so an
operator or reader sees every host and a host role only its own rows.

Rows come back as plain dicts in a fixed column order, numbers as int, times as
datetime; the CLI (wgsyncd/commands/fleet.py) prints them. What users type (a key, ``--since``,
``--days``) is checked here, with one-line errors that name the argument.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from wgsyncd import validate
from wgsyncd.store.db import StoreError, describe_connection, guarded

VIEWS_MIGRATION = "0006"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"([0-9]{1,7})([smhdw])")
_DAYS = re.compile(r"[0-9]{1,5}")  # ASCII digits only: str.isdigit() takes any script's
MAX_DAYS = 36500


class FleetInputError(ValueError):
    """An argument the operator typed is not usable; the message names it, in one line."""


# ---------------------------------------------------------------- what users type


def check_key(text: str) -> str:
    """A public key as wg prints it (44 characters of base64, 32 bytes)."""
    try:
        return validate.key(text.strip(), "KEY")
    except validate.Invalid as exc:
        raise FleetInputError(str(exc)) from None


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: a duration back from now (``90s``, ``30m``, ``24h``, ``7d``, ``2w``) or an
    ISO 8601 date or time (UTC when it names no zone); not in the future."""
    now = now or datetime.now(UTC)
    value = text.strip()
    m = _DURATION.fullmatch(value)
    if m:
        try:
            return now - timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
        except OverflowError:
            raise FleetInputError(f"--since: '{value}' reaches back before year 1") from None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise FleetInputError(
            f"--since: '{validate.shown(value, 40)}' is neither a duration (30m, 24h, 7d, 2w) "
            "nor an ISO 8601 time (2026-11-27 or 2026-11-27T08:00:00+00:00)"
        ) from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if when > now:
        raise FleetInputError(f"--since: {when.isoformat()} is in the future")
    return when


def parse_days(text: str) -> int:
    """``--days``: a whole number of days, 0 to 36500."""
    value = text.strip()
    if not _DAYS.fullmatch(value) or int(value) > MAX_DAYS:
        shown = validate.shown(value, 20)
        raise FleetInputError(f"--days: '{shown}' is not a whole number of days (0 to {MAX_DAYS})")
    return int(value)


# ---------------------------------------------------------------- the questions


def hosts(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every host and whether it still syncs (``state``: ok, stopped, never), stopped first."""
    return _read(
        conn,
        "fleet hosts",
        "SELECT host_id, hostname, state, last_ok_at, last_cycle_at, last_status, "
        "round(interval_s)::bigint AS interval_s, "
        "interval_measured, interfaces, peers, agent_version, first_seen, last_message "
        "FROM fleet_hosts ORDER BY state = 'ok', host_id",
    )


def peers(conn: psycopg.Connection[Any], host_id: str | None = None) -> list[dict[str, Any]]:
    """Every current peer (of one host) with its handshake and byte totals."""
    where, params = ("WHERE host_id = %s ", (host_id,)) if host_id else ("", ())
    return _read(
        conn,
        "fleet peers",
        "SELECT host_id, hostname, interface, name, public_key, allowed_ips, endpoint, disabled, "
        "latest_handshake, handshake_age_s, rx_bytes, tx_bytes, sources "
        f"FROM fleet_peers {where}ORDER BY host_id, interface, name NULLS LAST, public_key",
        params,
    )


def find(conn: psycopg.Connection[Any], key: str) -> list[dict[str, Any]]:
    """Where ``key`` lives: every peer and interface holding it, current ones first."""
    return _read(
        conn,
        "fleet find",
        "SELECT public_key, kind, host_id, hostname, interface, name, sources, addresses, endpoint, "
        "removed_at FROM fleet_keys WHERE public_key = %s "
        "ORDER BY removed_at IS NOT NULL, host_id, interface, kind",
        (check_key(key),),
    )


@dataclass(frozen=True)
class Stale:
    """Peers without a handshake for ``days`` days; ``never`` of them never had one."""

    days: int
    peers: list[dict[str, Any]]

    @property
    def never(self) -> int:
        """How many never completed a handshake (counted apart: new, or never working)."""
        return sum(1 for p in self.peers if p["latest_handshake"] is None)

    def summary(self) -> str:
        """One line for the end of the listing."""
        return (
            f"{len(self.peers)} peers without a handshake for {self.days} days "
            f"({self.never} never had one, {len(self.peers) - self.never} went quiet)"
        )


def stale(conn: psycopg.Connection[Any], days: int) -> Stale:
    """Enabled peers whose last handshake is older than ``days`` days, or that never had one."""
    rows = _read(
        conn,
        "fleet stale",
        "SELECT host_id, hostname, interface, name, public_key, latest_handshake, handshake_age_s, "
        "allowed_ips FROM fleet_peers WHERE NOT disabled "
        "AND (latest_handshake IS NULL OR latest_handshake < now() - make_interval(days => %s)) "
        "ORDER BY latest_handshake NULLS FIRST, host_id, interface, public_key",
        (days,),
    )
    return Stale(days, rows)


CONFLICTS_LIMIT = 1000


def conflicts(conn: psycopg.Connection[Any], limit: int = CONFLICTS_LIMIT) -> list[dict[str, Any]]:
    """The same public key or overlapping allowed IPs on two peers, fleet-wide first.

    One row per offending peer and value with one example and ``overlap_count`` (how many
    collide with it), at most ``limit`` rows: one host storing thousands of 0.0.0.0/0
    peers must not bury the operator's terminal or the other hosts' conflicts."""
    return _read(
        conn,
        "fleet conflicts",
        "SELECT kind, scope, host_a, interface_a, name_a, peer_a, value_a, "
        "host_b, interface_b, name_b, peer_b, value_b, overlap_count FROM fleet_conflicts "
        "ORDER BY kind DESC, scope, host_a, interface_a, value_a, host_b, interface_b, value_b LIMIT %s",
        (max(1, limit),),
    )


def top(conn: psycopg.Connection[Any], since: datetime, limit: int = 10) -> list[dict[str, Any]]:
    """The peers that moved the most bytes (received + sent) since ``since``.

    Sums as numeric: bigint deltas of many rows (or rx + tx of one) can pass 2^63."""
    return _read(
        conn,
        "fleet top",
        "SELECT host_id, hostname, interface, name, public_key, sum(rx_bytes::numeric) AS rx_bytes, "
        "sum(tx_bytes::numeric) AS tx_bytes, sum(rx_bytes::numeric + tx_bytes) AS total_bytes "
        "FROM fleet_traffic WHERE observed_at >= %s "
        "GROUP BY host_id, hostname, interface, name, public_key "
        "ORDER BY total_bytes DESC, host_id, interface, public_key LIMIT %s",
        (since, max(1, limit)),
    )


# ---------------------------------------------------------------- one read


def _read(conn: psycopg.Connection[Any], operation: str, query: str, params: Any = ()) -> list[dict]:
    """One READ ONLY transaction, rows as dicts; a schema without the views says how to fix it."""
    with guarded(conn, operation), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SET TRANSACTION READ ONLY")
        try:
            cur.execute(query, params)
        except psycopg.errors.UndefinedTable:
            raise StoreError(
                f"{describe_connection(conn)}: {operation}: the fleet views are missing (schema older "
                f"than {VIEWS_MIGRATION}); the operator runs `wgsyncd db migrate` with the owner's DSN"
            ) from None
        return [{k: _value(v) for k, v in row.items()} for row in cur.fetchall()]


def _value(v: Any) -> Any:
    """Byte totals and sums come back as numeric: whole numbers as int, for JSON and tables."""
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    return v
