"""The diffing writer's SQL: one HostState -> one transaction that writes only what changed.

Why this shape: thousands of hosts sync every minute into one database, and almost
every cycle changes nothing. So the writer loads the host's current rows (one query
per table; between its own cycles on one connection it keeps them instead, see
store/known.py), lets store/plan.py work out the diff in memory (no SQL there), and
writes only changed rows in bulk (one text[] per column to the schema owner's
SECURITY DEFINER functions, migration 0003: a host role may not UPDATE a table
itself). Runtime counters go to peer_stats and peer_traffic only, so a busy peer
never bumps its config row's version. A cycle whose state is, object for object,
the one it last committed skips the diff (known.HostMemo.same_state): an idle
cycle is the heartbeat, the signed-version check and the sync_status row.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.types.json import Jsonb

from wgsyncd.state import HostState
from wgsyncd.store import ahead, copytext, current, versions
from wgsyncd.store.db import StoreError, guarded, waited_in
from wgsyncd.store.known import Head, forget, memo_for
from wgsyncd.store.plan import (
    Plan,
    TableCounts,
    apply,
    counter_delta,
    counters_reset,
    drift_to_store,
    make_plan,
)
from wgsyncd.store.values import interface_values, keep_known, peer_values

# the planning names callers (and tests) have always found here
__all__ = [
    "TableCounts",
    "WriteReport",
    "counter_delta",
    "counters_reset",
    "interface_values",
    "keep_known",
    "peer_values",
    "record_failure",
    "write_cycle",
]

if TYPE_CHECKING:
    from wgsyncd.signing import Signer

_MAX_MESSAGE = 4000


@dataclass
class WriteReport:
    """What one write_cycle did, for the cycle report (`wgsyncd sync`, the daemon) and benchmarks."""

    host_id: str
    sync_id: uuid.UUID
    status: str  # ok | partial
    tables: dict[str, TableCounts] = field(default_factory=dict)
    total_config_rows_written: int = 0  # interfaces + peers + server_keys
    stats_rows_written: int = 0
    traffic_rows_written: int = 0
    round_trips: int = 0
    duration_s: float = 0.0
    config_version: int | None = None  # the config version this cycle made, None = no change


class _Tx:
    """A cursor that counts round trips, so tests and benchmarks can see the batching work."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self.cur = cur
        self.round_trips = 0

    def execute(self, sql: str, params: Any = None) -> psycopg.Cursor[Any]:
        """One statement, one round trip."""
        self.round_trips += 1
        try:
            return self.cur.execute(sql, params)
        except psycopg.errors.LockNotAvailable as exc:
            waited_in(exc, sql)
            raise

    def execute_large(self, sql: str, params: Any) -> None:
        """One statement with large parameters, on a cursor of its own, closed at once.

        Why: a cursor keeps the last statement's parameters, as psycopg dumped them,
        until its next statement: 1-3 MiB (a chunk of rows, a version document) still
        held while the next large one is built, at the first write's memory peak.
        Same connection, same transaction; nothing is read back.
        """
        self.round_trips += 1
        with self.cur.connection.cursor() as cur:
            try:
                cur.execute(sql, params)
            except psycopg.errors.LockNotAvailable as exc:
                waited_in(exc, sql)
                raise


# ---------------------------------------------------------------- bulk write


def _call(tx: _Tx, function: str, host_id: str, columns: Sequence[str], casts: Sequence[str]) -> None:
    """``SELECT function(host_id, col1::type[], ...)``: one statement, one round trip.

    Every upsert and removal goes through the schema owner's SECURITY DEFINER
    functions (migration 0003): a host role holds no UPDATE/DELETE/TRUNCATE, so it can
    take no lock that would stop another host, and the functions act only on the
    host_id bound to the session's role.
    """
    args = ", ".join(["%s"] + [f"%s::{t}[]" for t in casts])
    tx.execute_large(f"SELECT {function}({args})", [host_id, *columns])


# config rows per statement: a 10,000-peer first sync is 5 statements
CHUNK_ROWS = 2000


def _put_config(
    tx: _Tx, table: str, nkey: int, rows: list[tuple[Any, ...]], before: Callable[[], None] | None = None
) -> None:
    """Insert-or-update config rows (host_id, key..., fields..., row_hash, meta...) in key order.

    Sorted by key (the function sorts again, in the database's collation, within each
    statement; two writers of one host queue on its hosts row before any of this). The
    function bumps version and sets updated_at in SQL, so the writer need not load old
    versions. ``before`` runs between encoding the first rows and sending them.

    More than CHUNK_ROWS rows go in statements of CHUNK_ROWS, in key order, one after
    the other in the cycle's one transaction. Why: one 10,000-row statement is ~5 MiB
    of parameters, held as text, again as bytes, and again in libpq's output buffer,
    which keeps its largest size for the connection's life: measured, the daemon's RSS
    after a first sync into an empty database fell by 5 MiB on closing the connection.
    Not pipelined: psycopg's pure-Python pipeline (Debian's 3.1.7, and 3.3.9 here)
    deadlocks now and then with statements this large (server in ClientRead, client
    waiting for the sync's answer: psycopg issue #685); a chunk costs a round trip.
    """
    if not rows:
        return
    rows = sorted(rows, key=itemgetter(*range(1, 1 + nkey)))  # a copy: the plan's order matches its keys
    width = len(rows[0]) - len(_META) + 1  # through row_hash
    function, host_id = f"wgsyncd_put_{table}", rows[0][0]
    for at in range(0, len(rows), CHUNK_ROWS):
        cols = copytext.text_columns(rows[at : at + CHUNK_ROWS], width - 1, start=1)
        if before is not None:
            before, start = None, before
            start()
        _call(tx, function, host_id, cols, ["text"] * len(cols))
        del cols


def _put_columns(
    tx: _Tx, function: str, host_id: str, types: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """Scalar rows (host_id first, dropped) as one typed array per column."""
    rows.sort(key=itemgetter(1, 2))
    _call(tx, function, host_id, copytext.columns(rows, len(types), start=1), types)


def _mark_removed(tx: _Tx, table: str, host_id: str, keys: list[tuple[str, ...]]) -> None:
    """Set removed_at (and bump version) on rows that disappeared; never DELETE config."""
    if not keys:
        return
    keys.sort()
    pks = None if table == "interfaces" else [k[1] for k in keys]
    tx.execute(
        "SELECT wgsyncd_mark_removed(%s, %s::text[], %s::text[])", (host_id, [k[0] for k in keys], pks)
    )


_META = ("row_hash", "version", "created_at", "updated_at", "removed_at")
_STYPES = (
    "text",
    "text",
    "text",
    "timestamptz",
    "bigint",
    "bigint",
    "numeric",
    "numeric",
    "timestamptz",
    "text",
)
_TCOLS = ("host_id", "interface", "public_key", "observed_at", "rx_delta", "tx_delta")
_TTYPES = ("text", "text", "text", "timestamptz", "bigint", "bigint")
_KTYPES = ("text", "text", "text", "timestamptz", "timestamptz", "timestamptz")


def _write(tx: _Tx, host_id: str, plan: Plan, start: Callable[[], None]) -> None:
    """Write the plan, parents before children (interfaces before peers, for the foreign key).

    Removals go first: a host at its live-row quota (migration 0008) that replaces peers
    in one cycle never holds the old and the new ones at once. ``start`` runs once, when
    the server is about to get the cycle's longest statement (the peers, once encoded):
    work that can overlap it begins then (store/ahead.py).
    """
    _mark_removed(tx, "interfaces", host_id, plan.removals["interfaces"])
    _mark_removed(tx, "peers", host_id, plan.removals["peers"])
    _put_config(tx, "interfaces", 1, plan.upserts["interfaces"])
    if plan.upserts["peers"]:
        _put_config(tx, "peers", 2, plan.upserts["peers"], start)
    else:
        start()
    if plan.server_keys:
        _put_columns(tx, "wgsyncd_put_server_keys", host_id, _KTYPES, plan.server_keys)
    if plan.stats or plan.traffic:
        stats = sorted(plan.stats, key=itemgetter(1, 2))  # a copy: the plan's order matches its keys
        traffic = sorted(plan.traffic, key=itemgetter(1, 2, 3))
        cols = copytext.columns(stats, len(_STYPES) - 1, start=1)
        cols += copytext.columns(traffic, len(_TTYPES) - 1, start=1)
        _call(tx, "wgsyncd_put_stats", host_id, cols, [*_STYPES[1:], *_TTYPES[1:]])


def _writes_config(plan: Plan) -> bool:
    """Whether the plan writes any config row (interfaces, peers, server keys)."""
    return any(plan.upserts.values()) or any(plan.removals.values()) or bool(plan.server_keys)


_BEGIN = "SELECT prev_seen, prev_sync, tx_now FROM wgsyncd_begin_cycle(%s, %s, %s, %s, %s)"

_STATUS_COLUMNS = """
INSERT INTO sync_status (host_id, sync_id, started_at, finished_at, status, errors, message,
    drift_count, drift, drift_sha256, interfaces, peers, config_rows_written, duration_ms, agent_version)
"""
_STATUS_VALUES = """%(host_id)s, %(sync_id)s, %(started_at)s, clock_timestamp(), %(status)s, %(errors)s,
    %(message)s, %(drift_count)s, %(drift)s, %(drift_sha256)s, %(interfaces)s, %(peers)s, %(written)s,
    GREATEST(0, (extract(epoch FROM clock_timestamp() - %(started_at)s::timestamptz) * 1000))::int,
    %(agent_version)s"""
_STATUS_INSERT = f"{_STATUS_COLUMNS}VALUES ({_STATUS_VALUES})"
# the same row, and the host's signed head (migration 0009) in the same round trip: the
# function runs once, as the one row the insert selects from
_STATUS_INSERT_HEAD = (
    f"{_STATUS_COLUMNS}SELECT {_STATUS_VALUES} "
    "FROM wgsyncd_put_head(%(host_id)s, %(head_version)s, %(head_link)s, %(head_at)s, %(head_signature)s)"
)


def _head_params(head: Head | None, signer: Signer | None) -> dict[str, Any]:
    """The signed head's parameters; empty when there is nothing to vouch for (no signer,
    no version, or an unsigned one: restore then says it has no head to check against)."""
    if signer is None or head is None or head.link is None:
        return {}
    signed_head = signer.head(head.version, head.link)
    return {
        "head_version": signed_head.version,
        "head_link": signed_head.link,
        "head_at": signed_head.at,
        "head_signature": signed_head.signature,
    }


def write_cycle(
    conn: psycopg.Connection[Any],
    state: HostState,
    *,
    sync_id: uuid.UUID,
    started_at: datetime,
    agent_version: str,
    recovery_public_key: str | None = None,
    signer: Signer | None = None,
    as_of: datetime | None = None,
    machine_fp: str | None = None,
    build_ahead: bool = True,
) -> WriteReport:
    """Write one host's state in ONE transaction under the lock of the host's own row.

    A reader sees the previous snapshot or this one, never a mix; two agents with
    the same host_id queue on the hosts row instead of interleaving. Raises
    StoreError (rolled back); also when the session's role is bound to another
    host_id, or when ``machine_fp`` (config.machine_fingerprint) differs from the
    one the host_id was first synced from (two machines, one host_id).
    A config version (store/versions.py) is added in the same transaction when the
    configuration changed; its secrets are sealed to ``recovery_public_key`` (None:
    secrets are not stored at all), signed by ``signer`` (wgsyncd/signing.py; None
    writes an unsigned version, which restore refuses by default).

    Between cycles on one connection the writer remembers rows by object identity
    (store/known.py): a caller must pass new objects for what changed, never edit a
    state it already wrote (sources and merge never do).

    ``as_of``: the time config rows and a config version are stamped with; None is the
    database's now(). A cycle replayed from the spool passes the time it was read, so
    history keeps the outage's changes at the times they happened.

    ``build_ahead``: build the version content on a worker thread while the server
    writes the rows (store/ahead.py), the one-shot `sync`'s choice (it is timed). The
    daemon (False) builds it after them: at 10,000 peers up to ~0.14 s more on a
    cycle that writes config, and its first cycle's peak RSS ~1 MB lower (both
    transients are then never held at once).
    """
    t0 = time.monotonic()
    report = WriteReport(host_id=state.host_id, sync_id=sync_id, status="partial" if state.partial else "ok")
    memo = memo_for(conn, state.host_id)
    known, memo.view = memo.view, None  # whatever happens below, only a commit makes a view current
    with guarded(conn, f"write_cycle for host {state.host_id}"), conn.transaction(), conn.cursor() as cur:
        tx = _Tx(cur)
        host_row = tx.execute(
            _BEGIN, (state.host_id, state.hostname, agent_version, sync_id, machine_fp)
        ).fetchone()
        assert host_row is not None
        prev_seen, prev_sync, db_now = host_row
        now = db_now if as_of is None else as_of  # a spooled cycle keeps its own time
        view = known if known is not None and known.fresh(prev_sync) else None
        same = view is not None and memo.same_state(state)
        if same:
            plan, new_view = Plan(), view  # nothing to diff: see HostMemo.same_state
        else:
            plan, new_view = make_plan(
                state,
                now,
                prev_seen,
                memo,
                current.load(tx, state, view),
                memo.committed_peers() if view is not None else None,
            )
        first = prev_seen is None
        plan.counts["hosts"] = TableCounts(inserted=int(first), updated=int(not first))
        # config rows written: the version content is needed; built while the server works
        built: list[Future[Any] | None] = []

        def begin_ahead() -> None:
            wanted = build_ahead and _writes_config(plan)
            built.append(ahead.start(state, recovery_public_key) if wanted else None)

        try:
            _write(tx, state.host_id, plan, begin_ahead)
            report.tables = plan.counts
            report.total_config_rows_written = sum(
                plan.counts[t].written for t in ("interfaces", "peers", "server_keys")
            )
            report.config_version, head = versions.record(
                tx,
                state,
                now,
                sync_id,
                recovery_public_key,
                report.total_config_rows_written,
                head=view.head if view is not None else None,
                signer=signer,
                ahead=built[0] if built else None,
            )
        except BaseException:
            if built and built[0] is not None:
                built[0].cancel()  # a failed write: the next cycle must not queue behind its content
            raise
        drift_sha, drift_list = drift_to_store(state, memo)
        drift_value = Jsonb(drift_list) if drift_list is not None else None
        report.stats_rows_written = len(plan.stats)
        report.traffic_rows_written = len(plan.traffic)
        head_params = _head_params(head, signer)
        tx.execute(
            _STATUS_INSERT_HEAD if head_params else _STATUS_INSERT,
            {
                **head_params,
                "host_id": state.host_id,
                "sync_id": sync_id,
                "started_at": started_at,
                "status": report.status,
                "errors": [str(e) for e in state.errors],
                "message": signer.problem if signer is not None else None,  # a tamper line
                "drift_count": len(state.drift),
                "drift": drift_value,
                "drift_sha256": drift_sha,
                "interfaces": len(state.interfaces),
                "peers": sum(len(i.peers) for i in state.interfaces.values()),
                "written": report.total_config_rows_written,
                "agent_version": agent_version,
            },
        )
        report.round_trips = tx.round_trips + 1  # + COMMIT
    apply(new_view, plan, sync_id, head)  # committed: this is what the database holds now
    if signer is not None:
        signer.committed()  # only now may the local record name the new version
    memo.view = new_view
    if drift_value is not None:
        memo.drift = (drift_sha, time.monotonic())
    memo.remember(state)
    report.duration_s = time.monotonic() - t0
    return report


def record_failure(
    conn: psycopg.Connection[Any],
    host_id: str,
    sync_id: uuid.UUID,
    started_at: datetime,
    message: str,
    agent_version: str,
) -> None:
    """Record a cycle that died after connecting, in its own transaction.

    The caller passes a message already free of secrets (a StoreError or SourceError
    text); it is cut to one bounded field so a huge traceback cannot bloat the table.
    """
    if not isinstance(message, str):
        raise StoreError("record_failure: message must be text")
    forget(conn, host_id)  # the next cycle sees this failed status: it must read the database
    with guarded(conn, f"record_failure for host {host_id}"), conn.transaction():
        conn.execute(
            _STATUS_INSERT,
            {
                "host_id": host_id,
                "sync_id": sync_id,
                "started_at": started_at,
                "status": "failed",
                "errors": [],
                "message": message[:_MAX_MESSAGE],
                "drift_count": 0,
                "drift": None,
                "drift_sha256": None,
                "interfaces": 0,
                "peers": 0,
                "written": 0,
                "agent_version": agent_version,
            },
        )
