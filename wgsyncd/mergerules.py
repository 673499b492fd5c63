"""Who wins each field, and what counts as drift: merge's rules, used by merge.py and mergerow.py.

Who wins a field is a table, not code paths: the kernel for what is running
(keys, allowed IPs, endpoint, counters), the conf file for wg-quick fields, names
and comments, wgrest for its own metadata. Pure: nothing here keeps state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wgsyncd.canonical import address_set, comparable_endpoint, network_set
from wgsyncd.state import Drift, DriftKind, Peer, Secret, Source, shared

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
INTERFACE_DRIFT = ("public_key", "listen_port", "fwmark", "addresses")
PEER_DRIFT = ("allowed_ips", "preshared_key", "persistent_keepalive", "endpoint")


# wg-quick list fields a conf file can lose without the operator meaning it: wgrest v2
# rewrites the conf from `wg showconf` (no Address, DNS or hooks). An empty list there
# yields to a source that has values; the disagreement still shows as drift.
_EMPTY_YIELDS = frozenset({"addresses", "dns", "pre_up", "post_up", "pre_down", "post_down"})
EMPTY_YIELDS = _EMPTY_YIELDS  # the store's planning needs the same list (store/values.keep_known)


def pick(objs: dict[Source, Any], name: str, order: tuple[Source, ...]) -> tuple[Any, Source | None]:
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


def comparable(name: str, value: Any) -> Any:
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


def shown(name: str, value: Any) -> str:
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


def drift_value(obj: Any, name: str) -> Any:
    """A field's value for drift; "(none)" where None is a fact, so psk vs none is drift."""
    value = getattr(obj, name)
    if value is None and name in _NONE_IS_A_VALUE:
        return "(none)"
    return value


def field_drift(
    objs: dict[Source, Any], names: tuple[str, ...], make: Callable[[str, tuple], Drift]
) -> list[Drift]:
    """One DIFFERS drift per field on which the sources that know it disagree."""
    out = []
    for name in names:
        values = {src: drift_value(obj, name) for src, obj in objs.items()}
        raw = [v for v in values.values() if v is not None]
        if all(v == raw[0] for v in raw[1:]):
            # equal raw values normalise equally: skip the costly parse (10k peers: 1.6 s -> 0.05 s)
            continue
        seen = {src: (comparable(name, v), v) for src, v in values.items()}
        known = {src: cv for src, cv in seen.items() if cv[0] is not None}
        if len({cv[0] for cv in known.values()}) > 1:
            out.append(make(name, tuple((str(s), shown(name, cv[1])) for s, cv in known.items())))
    return out


def presence_drift(interface: str, peer: str | None, present: set[Source], readers: list[Source]) -> Drift:
    """An ONLY_IN drift listing, for each reading source, whether it has the object."""
    values = tuple((str(s), "present" if s in present else "absent") for s in readers)
    return Drift(interface, peer, "peer" if peer else "interface", DriftKind.ONLY_IN, values)


def merge_object(cls: type, key: dict[str, Any], objs: dict[Source, Any], precedence: dict) -> Any:
    """Build one merged Interface or Peer from the sources' copies, recording provenance."""
    merged = cls(**key)
    for name, order in precedence.items():
        value, src = pick(objs, name, order)
        if src is None:  # nobody has a value; one source may still vouch that there is none
            src = next((s for s in order if s in objs and name in objs[s].provenance), None)
        if src is not None:
            setattr(merged, name, value)
            merged.provenance[name] = src
    merged.provenance = shared(merged.provenance)
    merged.seen_by = tuple(s for s in Source if s in objs)
    return merged


def peer_presence(
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
    return [presence_drift(interface, pub, present, readers)]
