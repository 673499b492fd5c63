"""What this process knows its host's rows hold, so an unchanged cycle need not reload them.

Why: loading 10,000 row hashes and counters every minute only to find nothing
changed costs more than the rest of an idle cycle. After each commit the writer
keeps the rows it now knows the database holds, per connection and host. The next
cycle trusts that view only when it is provably current:

- the host row's ``last_sync_id`` (read in the same statement that takes the host
  row, under the lock of the host's own row) is the sync id of the cycle that built the
  view, so no other agent with the same host_id wrote in between;
- the view is younger than ``RELOAD_EVERY``, which bounds how long a hand edit in
  the database (something no agent announces) can go unnoticed;
- no interface of the cycle is incomplete (that path needs full stored values).

Otherwise the writer loads from the database as before. Any failure drops the view.
The row-hash memo is separate: a hash is a pure function of the row's values, so it
never goes stale, it only saves hashing the same values again.
"""

from __future__ import annotations

import time
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

RELOAD_EVERY = 600.0  # seconds; a hand edit of a host's rows is repaired within this

# (interface, public_key) -> (handshake epoch micros or None, rx, tx, rx_total, tx_total,
#  interface identity of the reading or None)
Stats = dict[tuple[str, str], tuple[int | None, int, int, int, int, str | None]]
# (interface, public_key) -> (first_seen, retired_at)
Keys = dict[tuple[str, str], tuple[datetime, datetime | None]]


@dataclass
class Head:
    """The latest config version and the status of the cycle that wrote the view."""

    version: int
    sha256: str
    recovery_key_fp: str | None
    last_status: str
    link: str | None = None  # the version's signed link (wgsyncd/signing.py); None = unsigned


class Gone(str):
    """The row hash of a row marked removed (a str subclass: one object per row, no tuple).

    A live row's hash is a plain str; compare with ``type(h) is str``, never ``==`` alone.
    """

    __slots__ = ()


@dataclass
class View:
    """The host's rows as of the commit of ``sync_id``."""

    sync_id: uuid.UUID
    loaded_at: float
    hashes: dict[str, dict[Any, str]]  # table -> key -> row_hash (a Gone when marked removed)
    keys: Keys
    stats: Stats
    head: Head | None

    def fresh(self, prev_sync_id: uuid.UUID | None) -> bool:
        """Whether the database still holds exactly this view (see the module doc)."""
        return (
            prev_sync_id == self.sync_id
            and time.monotonic() - self.loaded_at < RELOAD_EVERY
            and all(type(next(iter(t.values()), "")) is not tuple for t in self.hashes.values())
        )  # the last check: a view kept by an older layout ((hash, removed) pairs) is reloaded


@dataclass
class HostMemo:
    """Per connection and host: the committed view (or None) and the row-hash memo."""

    view: View | None = None
    # table -> key -> (values, digest): the last values hashed for that row (per table, so
    # no (table, key) tuple per row: the memo is held between cycles, see issue 14)
    digests: dict[str, dict[Any, tuple[tuple[Any, ...], str]]] = field(default_factory=dict)
    # table -> key -> (the state object, its row values): merge hands back the same Peer
    # object for an unchanged peer, so its values need not be built again. The Peer
    # objects of the last commit are these (see committed_peers)
    rows: dict[str, dict[Any, tuple[Any, tuple[Any, ...]]]] = field(default_factory=dict)
    # (sha256 of the drift list, monotonic time) this connection last stored in full
    drift: tuple[str, float] | None = None
    # the last drift list hashed and its sha256: an unchanged list is not encoded again
    drift_hashed: tuple[tuple[Any, ...], str] | None = None
    # what the last committed cycle was planned from (see same_state)
    last: tuple[dict[str, tuple[Any, dict[str, Any]]], dict[Any, bool], dict[str, str]] | None = None

    def remember(self, state: Any) -> None:
        """Keep what ``same_state`` compares, after a commit (copies of the dicts, not of the objects).

        Only a complete read is kept: an incomplete one was planned with stored values
        mixed in and nothing removed, so the same objects read completely next time
        must be planned again.
        """
        if not _complete(state):
            self.last = None
            return
        ifaces = {name: (iface, dict(iface.peers)) for name, iface in state.interfaces.items()}
        self.last = (ifaces, dict(state.sources), dict(state.interface_ids))

    def same_state(self, state: Any) -> bool:
        """Whether ``state`` is, object for object, the one the last commit was planned from.

        Then (with a current view) planning it again gives an empty plan: every row
        value, row hash and counter is a function of those objects, and the view
        already holds what that plan wrote. Merge hands back the same Interface object
        for an interface whose inputs did not change (merge.MergeMemo), so an idle
        10,000-peer cycle skips the per-peer diff entirely. Only for a complete read:
        an incomplete one mixes stored values in (keep_known) and removes nothing.
        """
        if self.last is None or not _complete(state):
            return False
        ifaces, sources, ids = self.last
        if state.sources != sources or state.interface_ids != ids or len(state.interfaces) != len(ifaces):
            return False
        for name, iface in state.interfaces.items():
            old = ifaces.get(name)
            # the peers compared as a dict (identity first, in C): a peer replaced inside
            # the same Interface object is a change too
            if old is None or old[0] is not iface or old[1] != iface.peers:
                return False
        return True

    def values(self, table: str, key: Any, obj: Any, compute: Any) -> tuple[Any, ...]:
        """``compute(obj)``, or last cycle's values when ``obj`` is the very same object."""
        rows = _table(self.rows, table)
        hit = rows.get(key)
        if hit is not None and hit[0] is obj:
            return hit[1]
        values = compute(obj)
        rows[key] = (obj, values)
        return values

    def digest(self, table: str, key: Any, values: tuple[Any, ...], compute: Any) -> str:
        """``compute(key, values)``, or the memoised hash when the values are equal to last time."""
        digests = _table(self.digests, table)
        hit = digests.get(key)
        if hit is not None and (hit[0] is values or hit[0] == values):
            return hit[1]
        digest = compute(key, values)
        digests[key] = (values, digest)
        return digest

    def committed_peers(self) -> Committed:
        """The Peer objects of the last commit by (interface, public key), as planned.

        Meaningful only with a current view: every commit plans every peer of its state
        (HostMemo.values), or is the same state again (same_state), and a failed commit
        drops the view, so the objects last planned are the objects last committed.
        """
        return Committed(_table(self.rows, "peers"))

    def prune(self, live: dict[str, Any]) -> None:
        """Forget rows that no longer exist (``live``: table -> its keys now), so the memos
        cannot grow without bound."""
        for memo in (self.digests, self.rows):
            for table in [t for t in memo if t not in live]:
                del memo[table]  # also what a memo of an older layout held
            for table, keys in live.items():
                rows = memo.get(table)
                if rows is not None and len(rows) > len(keys):
                    for k in [k for k in rows if k not in keys]:
                        del rows[k]


@dataclass
class Committed:
    """(interface, public key) -> the Peer object of the last commit, or None."""

    rows: dict[Any, tuple[Any, tuple[Any, ...]]]

    def get(self, key: Any) -> Any:
        """The committed object for ``key``."""
        hit = self.rows.get(key)
        return hit[0] if hit is not None else None


def _table(memo: dict[str, dict[Any, Any]], table: str) -> dict[Any, Any]:
    """One table's memo (made on first use)."""
    rows = memo.get(table)
    if rows is None:
        rows = memo[table] = {}
    return rows


def _complete(state: Any) -> bool:
    """Every source available read everything (no error at all)."""
    return not state.errors and bool(state.sources) and all(state.sources.values())


_MEMOS: weakref.WeakKeyDictionary[Any, dict[str, HostMemo]] = weakref.WeakKeyDictionary()


def memo_for(conn: Any, host_id: str) -> HostMemo:
    """The memo of ``host_id`` on ``conn``; a new connection starts empty (it reloads)."""
    return _MEMOS.setdefault(conn, {}).setdefault(host_id, HostMemo())


def forget(conn: Any, host_id: str | None = None) -> None:
    """Drop what is known for one host (or all) on ``conn``: the next cycle reloads."""
    hosts = _MEMOS.get(conn)
    if hosts is None:
        return
    if host_id is None:
        hosts.clear()
    elif host_id in hosts:
        hosts[host_id].view = None
        hosts[host_id].last = None
