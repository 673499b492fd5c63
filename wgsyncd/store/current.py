"""The host's current rows, read at the start of a cycle in the writer's transaction.

Why apart: the writer (store/writer.py) reads the current rows only when its kept
view (store/known.py) is not current; these are the few aggregate reads that
return them as the planning (store/plan.py) wants them: row hashes, server keys and
counters. ``tx`` is the writer's counting cursor.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from wgsyncd.state import HostState
from wgsyncd.store.known import Gone, Stats, View
from wgsyncd.store.plan import Current, Loaded, incomplete_interfaces
from wgsyncd.store.rows import INTERFACE_FIELDS, PEER_FIELDS


def _agg_lines(tx: Any, sql: str, params: Any, fields: int) -> list[list[str]]:
    """One string_agg value instead of thousands of rows: the pure-Python driver pays per value.

    Each line is ``interface<TAB>rest``; the rest is split from the right into
    ``fields - 1`` parts, so a stray tab inside a public key cannot shift columns
    (interface names cannot hold whitespace; the other fields are hex or numbers).
    """
    row = tx.execute(sql, params).fetchone()
    text = row[0] if row else None
    if not text:
        return []
    out = []
    for line in text.split("\n"):
        first, _, rest = line.partition("\t")
        out.append([first, *rest.rsplit("\t", fields - 2)] if fields > 1 else [first])
    return out


def _load_config(tx: Any, table: str, fields: Sequence[str], host_id: str, incomplete: list[str]) -> Current:
    """Hashes of all the host's rows, full values only for rows of incomplete interfaces."""
    key_cols = ("name",) if table == "interfaces" else ("interface", "public_key")
    key_sql = " || E'\\t' || ".join(key_cols)
    cur = Current()
    for parts in _agg_lines(
        tx,
        f"SELECT string_agg({key_sql} || E'\\t' || row_hash || E'\\t' || (removed_at IS NOT NULL)::int, "
        f"E'\\n') FROM {table} WHERE host_id = %s",
        (host_id,),
        len(key_cols) + 2,
    ):
        cur.hashes[tuple(parts[:-2])] = Gone(parts[-2]) if parts[-1] == "1" else parts[-2]
    if incomplete:
        rows = tx.execute(
            f"SELECT {', '.join(key_cols)}, {', '.join(fields)} FROM {table} "
            f"WHERE host_id = %s AND {key_cols[0]} = ANY(%s::text[])",
            (host_id, incomplete),
        ).fetchall()
        cur.full = {tuple(r[: len(key_cols)]): tuple(r[len(key_cols) :]) for r in rows}
    return cur


def _load_keys(tx: Any, host_id: str) -> dict[tuple[str, str], tuple[datetime, datetime | None]]:
    """The interfaces' public keys (a handful of rows)."""
    rows = tx.execute(
        "SELECT interface, public_key, first_seen, retired_at FROM server_keys WHERE host_id = %s",
        (host_id,),
    ).fetchall()
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def _load_stats(tx: Any, host_id: str) -> Stats:
    """Last counters and totals per peer; the handshake as epoch microseconds; the interface identity."""
    lines = _agg_lines(
        tx,
        "SELECT string_agg(concat_ws(E'\\t', interface, public_key, "
        "coalesce(((extract(epoch FROM latest_handshake) * 1000000)::bigint)::text, ''), "
        "rx_bytes, tx_bytes, rx_total, tx_total, coalesce(iface_id, '')), E'\\n') "
        "FROM peer_stats WHERE host_id = %s",
        (host_id,),
        8,
    )
    shared: dict[Any, Any] = {}  # one tuple per distinct reading (the view keeps them between cycles)
    out: Stats = {}
    for p in lines:
        reading = (int(p[2]) if p[2] else None, int(p[3]), int(p[4]), int(p[5]), int(p[6]), p[7] or None)
        out[(p[0], p[1])] = shared.setdefault(reading, reading)
    return out


def load(tx: Any, state: HostState, view: View | None) -> Loaded:
    """The host's current rows: the kept view's when current and every interface was read
    fully, else loaded (in full for the interfaces a source could not read)."""
    incomplete = incomplete_interfaces(state)
    if view is not None and not incomplete:
        return Loaded.from_view(view)
    cur_ifaces = _load_config(tx, "interfaces", INTERFACE_FIELDS, state.host_id, incomplete)
    cur_peers = _load_config(tx, "peers", PEER_FIELDS, state.host_id, incomplete)
    keys, stats = _load_keys(tx, state.host_id), _load_stats(tx, state.host_id)
    return Loaded(cur_ifaces, cur_peers, keys, stats, time.monotonic())
