"""Sources -> one HostState with per-field provenance, plus the drift list. Pure.

Who wins a field is a table, not code paths: the kernel for what is running
(keys, allowed IPs, endpoint, counters), the conf file for wg-quick fields, names
and comments, wgrest for its own metadata. Drift is reported only between sources
that actually read the interface this cycle, so a source that failed or does not
manage an interface never produces false "missing" drift.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from wgsyncd.canonical import address_set, comparable_endpoint, network_set
from wgsyncd.state import (
    Drift,
    DriftKind,
    HostState,
    Interface,
    Peer,
    Secret,
    Source,
    SourceResult,
    shared,
)

K, C, W = Source.KERNEL, Source.CONF, Source.WGREST

INTERFACE_PRECEDENCE: dict[str, tuple[Source, ...]] = {
    "private_key": (K, C, W),
    "public_key": (K, C, W),
    "listen_port": (K, C, W),
    "fwmark": (K, C, W),
    "addresses": (C, W),
    "dns": (C, W),
    "mtu": (C, W),
    "table": (C, W),
    "pre_up": (C, W),
    "post_up": (C, W),
    "pre_down": (C, W),
    "post_down": (C, W),
    "save_config": (C, W),
    "conf_path": (C,),
    "conf_text": (C,),
    "comments": (C,),
    "implementation": (K,),
}

PEER_PRECEDENCE: dict[str, tuple[Source, ...]] = {
    "preshared_key": (K, C, W),
    "allowed_ips": (K, C, W),
    "persistent_keepalive": (K, C, W),
    "endpoint": (K, W, C),
    "latest_handshake": (K, W),
    "rx_bytes": (K, W),
    "tx_bytes": (K, W),
    "name": (C, W),
    "comments": (C,),
    "disabled": (C, W),
    "private_key": (W,),
}

# fields compared between sources for drift, with how to make values comparable
# private keys are compared through their public keys: wg clamps the private key it shows
_INTERFACE_DRIFT = ("public_key", "listen_port", "fwmark", "addresses")
_PEER_DRIFT = ("allowed_ips", "preshared_key", "persistent_keepalive", "endpoint")


# wg-quick list fields a conf file can lose without the operator meaning it: wgrest v2
# rewrites the conf from `wg showconf` (no Address, DNS or hooks). An empty list there
# yields to a source that has values; the disagreement still shows as drift.
_EMPTY_YIELDS = frozenset({"addresses", "dns", "pre_up", "post_up", "pre_down", "post_down"})
EMPTY_YIELDS = _EMPTY_YIELDS  # the store's planning needs the same list (store/values.keep_known)


def _pick(objs: dict[Source, Any], name: str, order: tuple[Source, ...]) -> tuple[Any, Source | None]:
    """The first non-None value of ``name`` in precedence order, and its source."""
    fallback: tuple[Any, Source | None] = (None, None)
    for src in order:
        obj = objs.get(src)
        if obj is not None:
            value = getattr(obj, name)
            if value is None:
                continue
            if value == () and name in _EMPTY_YIELDS:
                fallback = fallback if fallback[1] else (value, src)
                continue
            return value, src
    return fallback


def _comparable(name: str, value: Any) -> Any:
    """Map a field value to what should be equal when two sources agree; None = do not compare."""
    if value is None:
        return None
    if isinstance(value, Secret):
        return value.fingerprint()
    if name == "allowed_ips":
        return network_set(value)
    if name == "addresses":
        return address_set(value)
    if name == "endpoint":
        return comparable_endpoint(value)
    if name in ("fwmark", "persistent_keepalive"):
        return value or 0
    return value


def _shown(name: str, value: Any) -> str:
    """A value as drift text; secrets appear only as a short fingerprint."""
    if value is None:
        return "(none)"
    if isinstance(value, Secret):
        return f"fp:{value.fingerprint()[:8]}"
    if isinstance(value, tuple | frozenset):
        return ",".join(sorted(str(v) for v in value))
    return str(value)


# fields every source that has the object knows: None there is "none", not "unknown"
# (a [Peer] without PresharedKey, a kernel peer without one, wgrest omitting it)
_NONE_IS_A_VALUE = frozenset({"preshared_key"})


def _drift_value(obj: Any, name: str) -> Any:
    """A field's value for drift; "(none)" where None is a fact, so psk vs none is drift."""
    value = getattr(obj, name)
    if value is None and name in _NONE_IS_A_VALUE:
        return "(none)"
    return value


def _field_drift(
    objs: dict[Source, Any], names: tuple[str, ...], make: Callable[[str, tuple], Drift]
) -> list[Drift]:
    """One DIFFERS drift per field on which the sources that know it disagree."""
    out = []
    for name in names:
        values = {src: _drift_value(obj, name) for src, obj in objs.items()}
        raw = [v for v in values.values() if v is not None]
        if all(v == raw[0] for v in raw[1:]):
            # equal raw values normalise equally: skip the costly parse (10k peers: 1.6 s -> 0.05 s)
            continue
        seen = {src: (_comparable(name, v), v) for src, v in values.items()}
        known = {src: cv for src, cv in seen.items() if cv[0] is not None}
        if len({cv[0] for cv in known.values()}) > 1:
            out.append(make(name, tuple((str(s), _shown(name, cv[1])) for s, cv in known.items())))
    return out


def _presence_drift(interface: str, peer: str | None, present: set[Source], readers: list[Source]) -> Drift:
    """An ONLY_IN drift listing, for each reading source, whether it has the object."""
    values = tuple((str(s), "present" if s in present else "absent") for s in readers)
    return Drift(interface, peer, "peer" if peer else "interface", DriftKind.ONLY_IN, values)


def _merge_object(cls: type, key: dict[str, Any], objs: dict[Source, Any], precedence: dict) -> Any:
    """Build one merged Interface or Peer from the sources' copies, recording provenance."""
    merged = cls(**key)
    for name, order in precedence.items():
        value, src = _pick(objs, name, order)
        if src is None:  # nobody has a value; one source may still vouch that there is none
            src = next((s for s in order if s in objs and name in objs[s].provenance), None)
        if src is not None:
            setattr(merged, name, value)
            merged.provenance[name] = src
    merged.provenance = shared(merged.provenance)
    merged.seen_by = tuple(s for s in Source if s in objs)
    return merged


def _peer_presence(
    interface: str, pub: str, peer_objs: dict[Source, Peer], readers: list[Source]
) -> list[Drift]:
    """Drift for a peer some sources lack; a peer disabled in its conf is expected nowhere else."""
    present = set(peer_objs)
    if C in peer_objs and peer_objs[C].disabled:
        if present == {C}:
            return []
        running = tuple((str(s), "disabled" if s == C else "present") for s in readers if s in present)
        return [Drift(interface, pub, "disabled", DriftKind.DIFFERS, running)]
    if present == set(readers):
        return []
    return [_presence_drift(interface, pub, present, readers)]


# one peer's merge inputs: each reading source's copy in reader order (None: it lacks the peer)
Row = tuple[Peer | None, ...]
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
    from wgsyncd.mergerow import RowMerge  # here: mergerow uses this module's tables

    readers = tuple(s for s in Source if s in objs)
    inputs: _IfaceInputs = (readers, tuple((s, objs[s]) for s in readers))
    if old is not None and old.inputs == inputs:
        return old  # identity first: an idle interface costs no per-peer work
    merged = _merge_object(Interface, {"name": name}, objs, INTERFACE_PRECEDENCE)
    drift = _field_drift(objs, _INTERFACE_DRIFT, lambda f, v: Drift(name, None, f, DriftKind.DIFFERS, v))
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
            state.drift.append(_presence_drift(ifname, None, set(readers), everyone))
        entry = new[ifname] = _merge_interface(ifname, objs, old.get(ifname))
        state.interfaces[ifname] = entry.merged
        state.drift.extend(entry.drift)
    if memo is not None:
        memo.interfaces = new
    return state


def _failed(state: HostState, source: Source, interface: str) -> bool:
    """Whether ``source`` reported an error for ``interface`` (or for everything) this cycle."""
    return any(e.source == source and e.interface in (None, interface) for e in state.errors)


def field_names(cls: type) -> list[str]:
    """The dataclass field names of Interface or Peer (used by tests to check the tables are total)."""
    return [f.name for f in fields(cls)]
