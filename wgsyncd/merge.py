"""Sources -> one HostState with per-field provenance, plus the drift list. Pure.

Who wins a field is a table, not code paths: the kernel for what is running
(keys, allowed IPs, endpoint, counters), the conf file for wg-quick fields, names
and comments, wgrest for its own metadata. Drift is reported only between sources
that actually read the interface this cycle, so a source that failed or does not
manage an interface never produces false "missing" drift.
"""

from __future__ import annotations

import itertools
import operator
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


# ---------------------------------------------------------------- one peer, fast

# a peer's values in field order (all but provenance and seen_by), read in one C call
_VALUES = tuple(f.name for f in fields(Peer) if f.name not in ("provenance", "seen_by"))
_values_of = operator.attrgetter(*_VALUES)
_ABSENT = (None,) * len(_VALUES)
_drift_values = operator.itemgetter(*(_VALUES.index(n) for n in _PEER_DRIFT))
# merge plans by input shape; a pure function's cache: bounded, never wrong, only slower when full
_PLANS: dict[
    tuple[Any, ...], tuple[Callable[[tuple], tuple], dict[str, Source], tuple[Source, ...], tuple]
] = {}
PLANS_MAX = 1024


class RowMerge:
    """Merges the peers of one interface, one row (each reader's copy or None) at a time.

    Why a plan per input shape: who wins each field depends only on which sources have
    the peer, which of their fields are None, and which fields each source vouches for
    (its provenance dict, shared by thousands of peers). So _merge_object runs once per
    shape; every other peer of that shape is one attrgetter per copy, one itemgetter for
    the merged values and one constructor call (10,000 peers: ~0.25 s -> a tenth).
    Drift takes the long way only for a peer whose copies are not all equal.
    """

    def __init__(self, interface: str, readers: tuple[Source, ...]) -> None:
        self.interface = interface
        self.readers = readers
        self.conf_at = readers.index(C) if C in readers else None
        self.code = sum(1 << i for i, s in enumerate(Source) if s in readers)  # ints hash in C

    def peer(self, pub: str, row: _Row) -> tuple[Peer, tuple[Drift, ...]]:
        """One merged peer and its drift (a shared () when there is none)."""
        vals = [_ABSENT if p is None else _values_of(p) for p in row]
        flat = sum(vals, (None,))  # index 0 is "nobody has a value"
        shape = (
            self.code,
            tuple(map(operator.is_, flat, itertools.repeat(None))),
            tuple([0 if p is None else id(p.provenance) for p in row]),
        )
        plan = _PLANS.get(shape) or self._plan(shape, row)
        merged = Peer(pub, *plan[0](flat), provenance=plan[1], seen_by=plan[2])
        drift: tuple[Drift, ...] = ()
        present = all(row)
        if not present or (self.conf_at is not None and row[self.conf_at].disabled):  # type: ignore[union-attr]
            drift = tuple(_peer_presence(self.interface, pub, self._objs(row), list(self.readers)))
        differ = [_drift_values(v) for v, p in zip(vals, row, strict=True) if p is not None]
        if any(d != differ[0] for d in differ[1:]):
            drift += tuple(_field_drift(self._objs(row), _PEER_DRIFT, self._maker(pub)))
        return merged, drift

    def _objs(self, row: _Row) -> dict[Source, Peer]:
        """The row as {source: copy} for the general helpers."""
        return {s: p for s, p in zip(self.readers, row, strict=True) if p is not None}

    def _maker(self, pub: str) -> Callable[[str, tuple], Drift]:
        """Builds this peer's DIFFERS drift for one field."""
        return lambda f, v: Drift(self.interface, pub, f, DriftKind.DIFFERS, v)

    def _plan(self, shape: tuple[Any, ...], row: _Row) -> tuple:
        """Merge one peer the general way and note where each merged value came from."""
        merged = _merge_object(Peer, {"public_key": ""}, self._objs(row), PEER_PRECEDENCE)
        width = len(_VALUES)
        at = {s: i for i, s in enumerate(self.readers)}
        picks = []
        for j, name in enumerate(_VALUES[1:], 1):
            src = merged.provenance.get(name)
            has_value = src is not None and getattr(merged, name) is not None
            picks.append(1 + at[src] * width + j if has_value else 0)  # type: ignore[index]
        # the provenance dicts stay referenced, so their ids in ``shape`` cannot be reused
        plan = (
            operator.itemgetter(*picks),
            merged.provenance,
            merged.seen_by,
            tuple(p.provenance for p in row if p),
        )
        if len(_PLANS) < PLANS_MAX:
            _PLANS[shape] = plan
        return plan


# one peer's merge inputs: each reading source's copy in reader order (None: it lacks the peer)
_Row = tuple[Peer | None, ...]
# one interface's merge inputs: the sources reading it, and each source's Interface
_IfaceInputs = tuple[tuple[Source, ...], tuple[tuple[Source, Interface], ...]]
# one remembered peer: its row, the merged Peer and its drift (a shared () when none)
_PeerEntry = tuple[_Row, Peer, tuple[Drift, ...]]


@dataclass
class _IfaceEntry:
    """One interface of the previous merge: its inputs, result, drift and its peers' entries."""

    inputs: _IfaceInputs
    merged: Interface
    drift: list[Drift]
    peers: dict[str, _PeerEntry]


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
    raw text). A peer's entry is one flat row of its sources' copies (~130 bytes, not
    ~400 with (source, copy) pairs): the sources are the interface's readers, in order.
    """

    interfaces: dict[str, _IfaceEntry] = field(default_factory=dict)

    @property
    def peers(self) -> dict[tuple[str, str], _PeerEntry]:
        """Every remembered peer by (interface, public key) (for tests and debugging)."""
        return {(n, pub): e for n, entry in self.interfaces.items() for pub, e in entry.peers.items()}

    def held_peers(self) -> Iterator[Peer]:
        """Every Peer this memo holds (merged ones and the sources' copies), e.g. to seal them."""
        for entry in self.interfaces.values():
            for row, peer, _drift in entry.peers.values():
                yield peer
                yield from (p for p in row if p is not None)


def _merge_interface(name: str, objs: dict[Source, Interface], old: _IfaceEntry | None) -> _IfaceEntry:
    """Merge one interface and its peers, reusing ``old`` (the previous merge) where it can."""
    readers = tuple(s for s in Source if s in objs)
    inputs: _IfaceInputs = (readers, tuple((s, objs[s]) for s in readers))
    if old is not None and old.inputs == inputs:
        return old  # identity first: an idle interface costs no per-peer work
    merged = _merge_object(Interface, {"name": name}, objs, INTERFACE_PRECEDENCE)
    drift = _field_drift(objs, _INTERFACE_DRIFT, lambda f, v: Drift(name, None, f, DriftKind.DIFFERS, v))
    # a row is positional: remembered rows only count when the same sources read the interface
    old_peers = old.peers if old is not None and old.inputs[0] == readers else {}
    new_peers: dict[str, _PeerEntry] = {}
    tables = [objs[s].peers for s in readers]
    keys: dict[str, Any] = tables[0]
    if any(t.keys() != keys.keys() for t in tables[1:]):
        keys = dict.fromkeys(itertools.chain.from_iterable(tables))  # kernel order, then conf's, wgrest's
    rows = zip(*(map(t.get, keys) for t in tables), strict=True)
    rowmerge = RowMerge(name, readers)
    merged_peers = merged.peers
    for pub, row in zip(keys, rows, strict=True):
        hit = old_peers.get(pub)
        # tuple equality checks identity before __eq__: the usual case (sources handed
        # back the same Peer objects) costs no field comparison at all
        if hit is None or hit[0] != row:
            hit = (row, *rowmerge.peer(pub, row))
        new_peers[pub] = hit
        merged_peers[pub] = hit[1]
        if hit[2]:
            drift.extend(hit[2])
    return _IfaceEntry(inputs, merged, drift, new_peers)


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
