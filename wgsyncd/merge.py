"""Sources -> one HostState with per-field provenance, plus the drift list. Pure.

Who wins a field is a table, not code paths (mergerules.py; mergerow.py applies it
to many peers at once). Drift is reported only between sources
that actually read the interface this cycle, so a source that failed or does not
manage an interface never produces false "missing" drift.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from wgsyncd import validate
from wgsyncd.mergerow import Row, RowMerge
from wgsyncd.mergerules import (  # noqa: F401  (re-exported: the tables are merge's public names)
    EMPTY_YIELDS,
    INTERFACE_DRIFT,
    INTERFACE_PRECEDENCE,
    PEER_PRECEDENCE,
    field_drift,
    merge_object,
    presence_drift,
)
from wgsyncd.state import Drift, DriftKind, HostState, Interface, Peer, Source, SourceError, SourceResult

# one interface's merge inputs: the sources reading it, and each source's Interface
_IfaceInputs = tuple[tuple[Source, ...], tuple[tuple[Source, Interface], ...]]


@dataclass
class _IfaceEntry:
    """One interface of the previous merge: its inputs, result and drift, and its peers' rows.

    A peer is remembered as its row only (each reader's copy, None where a source lacks
    it; ~64 bytes): its merged Peer is ``merged.peers[pub]`` and its drift, for the few
    peers that have any, ``peer_drift[pub]``. (Pairs of (source, copy) and one entry
    tuple per peer were ~400 bytes a peer.)
    """

    inputs: _IfaceInputs
    merged: Interface
    drift: list[Drift]
    rows: dict[str, Row]
    peer_drift: dict[str, tuple[Drift, ...]]


@dataclass
class MergeMemo:
    """The previous merge's interfaces and peers, so what did not change is not merged again.

    merge stays a function of its inputs: an interface (a peer) is reused only when the
    same sources read it and every source's copy is the same object or an equal one
    (tuple equality: identity first, then the dataclass's field comparison; an
    Interface's peers compare as a dict, so an unchanged peer costs one identity check
    in C). Sources hand back the same Peer object for an unchanged peer, so an idle
    10,000-peer interface costs a few dict comparisons instead of 10,000 per-peer
    lookups (~0.03 s -> ~0.001 s). Peer order is not part of the comparison:
    wireguard-go lists peers in a new order on every read and nothing downstream reads
    meaning into a running interface's order (versions sort; a conf's order is in its
    raw text).
    """

    interfaces: dict[str, _IfaceEntry] = field(default_factory=dict)

    @property
    def peers(self) -> dict[tuple[str, str], tuple[Row, Peer, tuple[Drift, ...]]]:
        """Every remembered peer by (interface, public key): (row, merged, drift) (tests, debugging)."""
        return {
            (n, pub): (row, e.merged.peers[pub], e.peer_drift.get(pub, ()))
            for n, e in self.interfaces.items()
            for pub, row in e.rows.items()
        }

    def held_peers(self) -> Iterator[Peer]:
        """Every Peer this memo holds (merged ones and the sources' copies), e.g. to seal them."""
        for entry in self.interfaces.values():
            yield from entry.merged.peers.values()
            for row in entry.rows.values():
                yield from (p for p in row if p is not None)


def _merge_interface(name: str, objs: dict[Source, Interface], old: _IfaceEntry | None) -> _IfaceEntry:
    """Merge one interface and its peers, reusing ``old`` (the previous merge) where it can."""
    readers = tuple(s for s in Source if s in objs)
    inputs: _IfaceInputs = (readers, tuple((s, objs[s]) for s in readers))
    if old is not None and old.inputs == inputs:
        return old  # identity first: an idle interface costs no per-peer work
    merged = merge_object(Interface, {"name": name}, objs, INTERFACE_PRECEDENCE)
    drift = field_drift(objs, INTERFACE_DRIFT, lambda f, v: Drift(name, None, f, DriftKind.DIFFERS, v))
    # a row is positional: remembered rows only count when the same sources read the interface
    reuse = old is not None and old.inputs[0] == readers
    old_rows = old.rows if reuse else {}  # type: ignore[union-attr]
    entry = _IfaceEntry(inputs, merged, drift, {}, {})
    tables = [objs[s].peers for s in readers]
    keys: dict[str, Any] = tables[0]
    if any(t.keys() != keys.keys() for t in tables[1:]):
        keys = dict.fromkeys(itertools.chain.from_iterable(tables))  # kernel order, then conf's, wgrest's
    rows = zip(*(map(t.get, keys) for t in tables), strict=True)
    rowmerge = RowMerge(name, readers)
    merged_peers, new_rows, peer_drift = merged.peers, entry.rows, entry.peer_drift
    for pub, row in zip(keys, rows, strict=True):
        # tuple equality checks identity before __eq__: the usual case (sources handed
        # back the same Peer objects) costs no field comparison at all
        if old_rows.get(pub) == row:
            row = old_rows[pub]
            peer, found = old.merged.peers[pub], old.peer_drift.get(pub, ())  # type: ignore[union-attr]
        else:
            peer, found = rowmerge.peer(pub, row)
        new_rows[pub] = row
        merged_peers[pub] = peer
        if found:
            peer_drift[pub] = found
            drift.extend(found)
    return entry


def merge(
    host_id: str,
    hostname: str,
    results: list[SourceResult],
    collected_at: datetime,
    memo: MergeMemo | None = None,
) -> HostState:
    """Combine the sources' results into one HostState with provenance, drift and errors.

    ``memo`` (kept by the caller between cycles) lets unchanged peers skip merging;
    the result is the same with or without it. Merged peers are shared between
    cycles then, so nothing downstream may mutate them (nothing does).
    """
    old = memo.interfaces if memo is not None else {}
    new: dict[str, _IfaceEntry] = {}
    state = HostState(host_id=host_id, hostname=hostname, collected_at=collected_at)
    for res in results:
        state.errors.extend(res.errors)
        state.unparsed.update(res.unparsed)
        if res.available:
            state.sources[res.source] = not any(e.interface is None for e in res.errors)
    by_name: dict[str, dict[Source, Interface]] = {}
    for res in results:
        for ifname, iface in res.interfaces.items():
            by_name.setdefault(ifname, {})[res.source] = iface
    for ifname in sorted(by_name):
        objs = by_name[ifname]
        readers = [s for s in Source if s in objs]
        # a source that is up and fine but lacks the interface entirely is drift
        complete = {s for s, ok in state.sources.items() if ok and not _failed(state, s, ifname)}
        if complete - set(readers):
            everyone = [s for s in Source if s in complete or s in objs]
            state.drift.append(presence_drift(ifname, None, set(readers), everyone))
        entry = new[ifname] = _merge_interface(ifname, objs, old.get(ifname))
        state.interfaces[ifname] = _within_bounds(state, entry.merged)
        state.drift.extend(entry.drift)
    if memo is not None:
        memo.interfaces = new
    return state


def _within_bounds(state: HostState, iface: Interface) -> Interface:
    """The interface without the peers whose allowed IPs pass what the database keeps per
    peer (migration 0007; wg takes any number): one such row would fail the host's whole
    transaction, every cycle. Each is an error confined to its interface, so the store
    keeps that interface's rows as they were. A copy: merged objects are shared with the memo."""
    over = [p for p in iface.peers.values() if len(p.allowed_ips or ()) > validate.MAX_ALLOWED_IPS]
    if not over:
        return iface
    for p in over:
        source = (p.provenance or {}).get("allowed_ips") or Source.KERNEL
        message = (
            f"{len(p.allowed_ips or ()):,} allowed IPs, over the {validate.MAX_ALLOWED_IPS:,} the "
            "database keeps per peer: this peer is not stored"
        )
        state.errors.append(
            SourceError(source, f"interface {iface.name} peer {p.public_key}", message, iface.name)
        )
    gone = {p.public_key for p in over}
    return replace(iface, peers={k: p for k, p in iface.peers.items() if k not in gone})


def _failed(state: HostState, source: Source, interface: str) -> bool:
    """Whether ``source`` reported an error for ``interface`` (or for everything) this cycle."""
    return any(e.source == source and e.interface in (None, interface) for e in state.errors)


def field_names(cls: type) -> list[str]:
    """The dataclass field names of Interface or Peer (used by tests to check the tables are total)."""
    return [f.name for f in fields(cls)]
