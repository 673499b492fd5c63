"""The writer's planning: what one cycle must write, worked out in memory. Pure.

Why apart from the SQL (store/writer.py): the diff is where the rules live
(unchanged rows skipped by row hash, removals only after a complete read, stored
values kept for an interface a source could not read, counter deltas that survive
interface restarts, server keys retired), and rules are cheapest to test without a
database (tests/unit/store/test_plan.py, which also runs on Debian's libraries).
Input: the state, the host's current rows (loaded by the writer or taken from its
kept view, store/known.py) and the memo; output: a Plan of rows, plus the View the
database will hold once the plan is committed.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from wgsyncd.state import HostState, Peer, key_fingerprint
from wgsyncd.store.known import Committed, Gone, Head, HostMemo, Keys, Stats, View
from wgsyncd.store.rows import INTERFACE_FIELDS, PEER_FIELDS
from wgsyncd.store.values import HASH_ENCODER, interface_values, keep_known, peer_values, row_hash

# drift is stored when it changed, at most this many entries (drift_count has the
# real number), and again after DRIFT_RESTORE_EVERY seconds so retention cannot prune
# the last stored copy of a long-lasting drift away (see migration 0003)
DRIFT_CAP = 1000
DRIFT_RESTORE_EVERY = 6 * 3600.0


@dataclass
class TableCounts:
    """Rows of one table this cycle: new, changed, and marked removed/retired."""

    inserted: int = 0
    updated: int = 0
    removed: int = 0

    @property
    def written(self) -> int:
        """Every row this cycle wrote to the table."""
        return self.inserted + self.updated + self.removed


@dataclass
class Current:
    """A config table's current rows: key -> row_hash (a known.Gone when marked removed),
    and full values where needed."""

    hashes: dict[Any, str] = field(default_factory=dict)
    full: dict[Any, tuple[Any, ...]] = field(default_factory=dict)


@dataclass
class Plan:
    """Rows to write, built in memory from the diff."""

    upserts: dict[str, list[tuple[Any, ...]]] = field(default_factory=lambda: {"interfaces": [], "peers": []})
    removals: dict[str, list[tuple[str, ...]]] = field(
        default_factory=lambda: {"interfaces": [], "peers": []}
    )
    server_keys: list[tuple[Any, ...]] = field(default_factory=list)
    stats: list[tuple[Any, ...]] = field(default_factory=list)
    traffic: list[tuple[Any, ...]] = field(default_factory=list)
    counts: dict[str, TableCounts] = field(
        default_factory=lambda: {t: TableCounts() for t in ("hosts", "interfaces", "peers", "server_keys")}
    )
    # the key of each upsert and stats row, in the same order: the view keeps these tuples (apply)
    upsert_keys: dict[str, list[tuple[str, ...]]] = field(
        default_factory=lambda: {"interfaces": [], "peers": []}
    )
    stat_keys: list[tuple[str, str]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Nothing to write: every table unchanged."""
        return not (
            any(self.upserts.values())
            or any(self.removals.values())
            or self.server_keys
            or self.stats
            or self.traffic
        )


@dataclass
class Loaded:
    """The host's current rows: loaded by the writer, or its view's when that is current."""

    interfaces: Current
    peers: Current
    keys: Keys
    stats: Stats
    loaded_at: float  # monotonic time of the load

    @classmethod
    def from_view(cls, view: View) -> Loaded:
        """The rows a current view holds (no database)."""
        return cls(
            Current(view.hashes["interfaces"]),
            Current(view.hashes["peers"]),
            view.keys,
            view.stats,
            view.loaded_at,
        )


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(when: datetime | None) -> int | None:
    """Exact microseconds since the epoch (naive = UTC), to compare with what the DB holds."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - EPOCH) // timedelta(microseconds=1)


def _plan_config(
    plan: Plan,
    state: HostState,
    now: datetime,
    table: str,
    fields: Sequence[str],
    current: Current,
    desired: dict[tuple[str, ...], tuple[tuple[Any, ...], bool]],
    removable: set[tuple[str, ...]],
    memo: HostMemo,
) -> None:
    """Diff one config table: ``desired`` maps key -> (values, incomplete).

    Keys in ``current`` but not in ``desired`` are marked removed when they are in
    ``removable`` (their interface was read completely). Unchanged rows are skipped:
    same row_hash and not removed.
    """
    counts = plan.counts[table]
    for key, (values, incomplete) in desired.items():
        old = current.hashes.get(key)
        if incomplete and key in current.full:
            values = keep_known(fields, current.full[key], values)
        digest = memo.digest(table, key, values, row_hash)
        if old is None:
            counts.inserted += 1
        elif old == digest and type(old) is str:  # same hash, not marked removed
            continue
        else:
            counts.updated += 1
        plan.upserts[table].append((state.host_id, *key, *values, digest, 1, now, now, None))
        plan.upsert_keys[table].append(key)
    for key, old_hash in current.hashes.items():
        if type(old_hash) is str and key not in desired and key in removable:
            counts.removed += 1
            plan.removals[table].append(key)


def _plan_server_keys(
    plan: Plan,
    state: HostState,
    now: datetime,
    prev_seen: datetime | None,
    keys: dict[tuple[str, str], tuple[datetime, datetime | None]],
    current_key: dict[str, str | None],
    gone: set[str],
) -> None:
    """Record each interface's current public key; retire the ones replaced or gone.

    A key replaced or gone gets last_seen = the previous sync (the last time it was
    still current). An unknown key (None) retires nothing: unknown is not "changed".
    """
    counts = plan.counts["server_keys"]
    for (ifname, pk), (first_seen, retired_at) in sorted(keys.items()):
        new = current_key.get(ifname)
        if retired_at is None and (ifname in gone or (new is not None and new != pk)):
            counts.removed += 1
            plan.server_keys.append(
                (state.host_id, ifname, pk, key_fingerprint(pk), first_seen, prev_seen or now, now)
            )
    for ifname, pk in sorted((i, k) for i, k in current_key.items() if k is not None):
        old = keys.get((ifname, pk))
        if old is None:
            counts.inserted += 1
            plan.server_keys.append((state.host_id, ifname, pk, key_fingerprint(pk), now, now, None))
        elif old[1] is not None:
            counts.updated += 1
            plan.server_keys.append((state.host_id, ifname, pk, key_fingerprint(pk), old[0], now, None))


def counter_delta(new: int, last: int, reset: bool) -> int:
    """Bytes since the last reading; after a reset (interface restart) the counter restarted at 0."""
    return new if reset or new < last else new - last


def counters_reset(
    old: tuple[int | None, int, int, int, int, str | None] | None,
    rx: int,
    tx: int,
    iface_id: str | None,
    reappeared: bool,
) -> bool:
    """Whether the counters restarted since the stored reading ``old`` (pure; see _plan_stats).

    Any of: a counter went down; the interface is another incarnation than the one the
    stored reading came from (sources/identity.py; unknown on either side decides
    nothing); the peer was absent from the last complete read and is back (a peer
    removed and re-added starts from zero inside the same interface).
    """
    if old is None:
        return False
    if rx < old[1] or tx < old[2]:
        return True
    if iface_id is not None and old[5] is not None and iface_id != old[5]:
        return True
    return reappeared


def _plan_stats(
    plan: Plan,
    state: HostState,
    stats: Stats,
    committed: dict[tuple[str, str], Peer] | None = None,
    reappeared: frozenset[tuple[str, str]] | set[tuple[str, str]] = frozenset(),
    peer_keys: list[tuple[str, str]] | None = None,
) -> None:
    """New counters -> peer_stats (only when changed) and non-zero deltas -> peer_traffic.

    On a reset (counters_reset) both deltas are the new values: both counters
    restarted with the interface or the peer, and subtracting the stored reading
    from a counter that restarted would undercount it. Totals only ever grow.
    ``committed``: the Peer objects whose counters ``stats`` already holds (the last
    commit, when the view is current); the very same object cannot have new counters,
    so it is skipped. ``reappeared``: peers marked removed in the store and present now.
    ``peer_keys``: each peer's key tuple in the state's order (the view keeps those objects).
    """
    at = state.collected_at
    committed = committed or {}
    keys = iter(peer_keys) if peer_keys is not None else None
    for ifname, iface in state.interfaces.items():
        iface_id = state.interface_ids.get(ifname)
        for peer in iface.peers.values():
            key = next(keys) if keys is not None else (ifname, peer.public_key)
            if committed.get(key) is peer:
                continue
            if peer.rx_bytes is None and peer.tx_bytes is None and peer.latest_handshake is None:
                continue
            old = stats.get(key)
            o_hs, o_rx, o_tx, o_rxt, o_txt, o_id = old if old else (None, 0, 0, 0, 0, None)
            counters_known = peer.rx_bytes is not None or peer.tx_bytes is not None
            rx = peer.rx_bytes if peer.rx_bytes is not None else o_rx
            tx = peer.tx_bytes if peer.tx_bytes is not None else o_tx
            # with counters (kernel), None means "never"; without, it means "unknown"
            hs = micros(peer.latest_handshake) if counters_known or peer.latest_handshake else o_hs
            new_id = (iface_id or o_id) if counters_known else o_id
            if old is not None and (hs, rx, tx, new_id) == (o_hs, o_rx, o_tx, o_id):
                continue
            reset = counters_known and counters_reset(old, rx, tx, iface_id, key in reappeared)
            d_rx = counter_delta(rx, o_rx, reset)
            d_tx = counter_delta(tx, o_tx, reset)
            hs_at = None if hs is None else EPOCH + timedelta(microseconds=hs)
            plan.stats.append(
                (
                    state.host_id,
                    ifname,
                    peer.public_key,
                    hs_at,
                    rx,
                    tx,
                    o_rxt + d_rx,
                    o_txt + d_tx,
                    at,
                    new_id,
                )
            )
            plan.stat_keys.append(key)
            if d_rx or d_tx:
                plan.traffic.append((state.host_id, ifname, peer.public_key, at, d_rx, d_tx))


def drift_json(state: HostState) -> list[dict[str, Any]]:
    """The drift list as jsonb: values are text and never secrets (see state.Drift)."""
    return [
        {
            "interface": d.interface,
            "peer": d.peer,
            "field": d.field,
            "kind": str(d.kind),
            "values": [[str(s), str(v)] for s, v in d.values],
        }
        for d in state.drift
    ]


def drift_to_store(state: HostState, memo: HostMemo) -> tuple[str, list[dict[str, Any]] | None]:
    """(sha256 of the whole drift list, the capped list to store or None when unchanged).

    An idle cycle of a host with 10,000 drifting peers used to add ~500 KB of jsonb;
    now it adds the hash and the count. "Unchanged" is what this connection last
    stored (a new connection stores once), refreshed every DRIFT_RESTORE_EVERY.
    """
    key = tuple(state.drift)  # frozen Drift objects: equal (identity first) when unchanged
    hashed = memo.drift_hashed
    drift: list[dict[str, Any]] | None = None
    if hashed is not None and hashed[0] == key:
        sha = hashed[1]
    else:
        drift = drift_json(state)
        sha = hashlib.sha256(HASH_ENCODER.encode(drift).encode()).hexdigest()
        memo.drift_hashed = (key, sha)
    last = memo.drift
    if last is not None and last[0] == sha and time.monotonic() - last[1] < DRIFT_RESTORE_EVERY:
        return sha, None
    return sha, (drift if drift is not None else drift_json(state))[:DRIFT_CAP]


def may_remove(state: HostState, ifname: str) -> bool:
    """Whether things of ``ifname`` missing from the state may be marked removed.

    Not when some source could not read it (state.incomplete), and not when no source
    read anything at all (every source unavailable: an empty state is then "unknown",
    not "the host has no interfaces").
    """
    return bool(state.sources) and all(state.sources.values()) and not state.incomplete(ifname)


def incomplete_interfaces(state: HostState) -> list[str]:
    """The interfaces some source could not read fully: their current rows are loaded in full."""
    return sorted(n for n in state.interfaces if not may_remove(state, n))


def make_plan(
    state: HostState,
    now: datetime,
    prev_seen: datetime | None,
    memo: HostMemo,
    current: Loaded,
    committed: Mapping[tuple[str, str], Peer] | Committed | None,
) -> tuple[Plan, View]:
    """Work out everything to write this cycle against the host's ``current`` rows.

    ``committed``: the Peer objects of the last commit when ``current`` is that commit's
    view (their counters are in it), else None. The returned view is what will be
    current after the commit (see apply).
    """
    plan = Plan()
    incomplete = incomplete_interfaces(state)
    cur_ifaces, cur_peers = current.interfaces, current.peers
    gone = {k[0] for k in cur_ifaces.hashes if k[0] not in state.interfaces and may_remove(state, k[0])}
    want_ifaces = {(n,): (interface_values(i), n in incomplete) for n, i in state.interfaces.items()}
    _plan_config(
        plan, state, now, "interfaces", INTERFACE_FIELDS, cur_ifaces, want_ifaces, {(n,) for n in gone}, memo
    )
    want_peers: dict[tuple[str, ...], tuple[tuple[Any, ...], bool]] = {}
    same: dict[tuple[str, str], Peer] = {}  # the peers whose object was committed last time
    peer_keys: list[tuple[str, str]] = []
    for ifname, iface in state.interfaces.items():
        for peer in iface.peers.values():
            key = (ifname, peer.public_key)
            peer_keys.append(key)
            if committed is not None and committed.get(key) is peer:
                same[key] = peer  # before memo.values makes this cycle's object the memo's
            want_peers[key] = (memo.values("peers", key, peer, peer_values), ifname in incomplete)
    complete = gone | (set(state.interfaces) - set(incomplete))
    removable = {k for k in cur_peers.hashes if k[0] in complete}
    _plan_config(plan, state, now, "peers", PEER_FIELDS, cur_peers, want_peers, removable, memo)
    memo.prune({"interfaces": want_ifaces, "peers": want_peers})
    key_idx = INTERFACE_FIELDS.index("public_key")
    current_key = {n: want_ifaces[(n,)][0][key_idx] for n in state.interfaces}
    _plan_server_keys(plan, state, now, prev_seen, current.keys, current_key, gone)
    reappeared = {k for k in want_peers if type(cur_peers.hashes.get(k)) is Gone}
    _plan_stats(plan, state, current.stats, same, reappeared, peer_keys)
    hashes = {"interfaces": cur_ifaces.hashes, "peers": cur_peers.hashes}
    return plan, View(uuid.UUID(int=0), current.loaded_at, hashes, current.keys, current.stats, None)


def apply(view: View, plan: Plan, sync_id: uuid.UUID, head: Head | None) -> None:
    """Make ``view`` what the database holds once ``plan`` is committed (called after COMMIT)."""
    for table in ("interfaces", "peers"):
        hashes = view.hashes[table]
        for key, row in zip(plan.upsert_keys[table], plan.upserts[table], strict=True):
            hashes[key] = row[-5]
        for key in plan.removals[table]:
            hashes[key] = Gone(hashes[key])
    for _h, ifname, pk, _fp, first_seen, _last, retired_at in plan.server_keys:
        old = view.keys.get((ifname, pk))
        view.keys[(ifname, pk)] = (old[0] if old else first_seen, retired_at)
    shared: dict[Any, Any] = {}  # one tuple per distinct reading: idle peers all read alike
    for key, (_h, _i, _pk, hs_at, rx, tx, rxt, txt, _at, iface_id) in zip(
        plan.stat_keys, plan.stats, strict=True
    ):
        reading = (micros(hs_at), rx, tx, rxt, txt, iface_id)
        view.stats[key] = shared.setdefault(reading, reading)
    view.sync_id, view.head = sync_id, head
