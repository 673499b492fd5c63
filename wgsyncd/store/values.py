"""A config row's values as stored, and their hash. Pure: no database, no I/O.

Why its own module: the writer's planning (store/plan.py), the spool's round-trip
check and the tests all need "what would this Interface or Peer look like as a
row" without a connection. Keys become fingerprints here; a secret's value never
leaves this module.
"""

from __future__ import annotations

import hashlib
import json.encoder
from collections.abc import Sequence
from typing import Any

from wgsyncd.canonical import COMPACT
from wgsyncd.merge import EMPTY_YIELDS
from wgsyncd.state import Interface, Peer, Secret, interned, public_key_from_private
from wgsyncd.store.rows import INTERFACE_FIELDS


def _arr(value: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """A list field as the state holds it: the tuple itself, no copy (the writer keeps row
    values between cycles; a tuple hashes and encodes as the list psycopg returns)."""
    return value


def _secret_pair(secret: Secret | None, known: bool = False) -> tuple[bool | None, str | None]:
    """(is there one, its fingerprint); the value itself never leaves this function.

    ``known``: a source vouched for the field (it is in the provenance), so None
    means "there is none" (False), not "nobody knows" (None).
    """
    if secret is None:
        return (False, None) if known else (None, None)
    return (True, secret.fingerprint()) if secret else (False, None)


# row values repeat the same few provenance maps and source lists thousands of times:
# one shared (never modified) object per distinct value keeps a 10k-peer memo ~10 MB smaller
_PROVENANCE: dict[tuple[Any, ...], dict[str, str]] = {}
_SOURCES: dict[str, list[str]] = {}


def _provenance(prov: dict[str, Any]) -> dict[str, str]:
    """Field -> source name, as stored in jsonb (shared between rows; never modified).

    Keyed by the field names and the joined source names: hashing Source members (a
    StrEnum) runs Enum.__hash__ in Python, str.join reads them in C."""
    try:
        joined = "\n".join(prov.values())
    except TypeError:  # a value that is not text
        joined = None
    key: tuple[Any, ...]
    if joined is not None and joined.count("\n") == len(prov) - 1:
        key = (*prov, joined)
    else:  # the general key (a value holding the separator would be ambiguous)
        key = tuple(prov.items())
    return interned(_PROVENANCE, key, lambda: {str(k): str(v) for k, v in sorted(prov.items())})


def _sources(seen_by: tuple[Any, ...]) -> list[str]:
    """Which sources saw the row, sorted, as stored in text[] (shared; never modified).

    Keyed by the joined names: str.join reads Source members (a StrEnum) in C."""
    return interned(_SOURCES, ",".join(seen_by), lambda: sorted({str(s) for s in seen_by}))


def _interface_public_key(iface: Interface) -> str | None:
    """The interface's public key; derived when only the private key is known."""
    if iface.public_key:
        return iface.public_key
    if iface.private_key:
        return public_key_from_private(iface.private_key)
    return None


def interface_values(iface: Interface) -> tuple[Any, ...]:
    """The INTERFACE_FIELDS of ``iface`` as stored; None where no source knew."""
    conf_sha = iface.conf_text.sha256() if iface.conf_text else None
    values = {
        "public_key": _interface_public_key(iface),
        "listen_port": iface.listen_port,
        "fwmark": iface.fwmark,
        "addresses": _arr(iface.addresses),
        "dns": _arr(iface.dns),
        "mtu": iface.mtu,
        "table_name": iface.table,
        "pre_up": _arr(iface.pre_up),
        "post_up": _arr(iface.post_up),
        "pre_down": _arr(iface.pre_down),
        "post_down": _arr(iface.post_down),
        "save_config": iface.save_config,
        "conf_path": iface.conf_path,
        "conf_sha256": conf_sha,
        "implementation": iface.implementation,
        "comments": _arr(iface.comments),
        "sources": _sources(iface.seen_by),
        "provenance": _provenance(iface.provenance),
    }
    return tuple(values[f] for f in INTERFACE_FIELDS)


def peer_values(peer: Peer) -> tuple[Any, ...]:
    """The PEER_FIELDS of ``peer`` as stored: fingerprints instead of keys, no counters.

    Built by position, in PEER_FIELDS order (10,000 calls a first sync; the order is
    checked field by field in tests/unit/store/test_values.py)."""
    has_psk, psk_fp = _secret_pair(peer.preshared_key, "preshared_key" in peer.provenance)
    has_priv, priv_fp = _secret_pair(peer.private_key, "private_key" in peer.provenance)
    return (
        peer.name,
        _arr(peer.comments),
        _arr(peer.allowed_ips),
        peer.endpoint,
        peer.persistent_keepalive,
        peer.disabled,
        has_psk,
        psk_fp,
        has_priv,
        priv_fp,
        _sources(peer.seen_by),
        _provenance(peer.provenance),
    )


# pairs that must be taken together from one side when merging known values
_PAIRS = {("has_preshared_key", "preshared_key_fp"), ("has_private_key", "private_key_fp")}


def keep_known(fields: Sequence[str], old: tuple[Any, ...], new: tuple[Any, ...]) -> tuple[Any, ...]:
    """For an incomplete interface: new values where known, the stored value where None.

    sources and provenance accumulate instead of shrinking: a source that failed this
    cycle is not evidence that it stopped seeing the thing. Likewise an empty wg-quick
    list (addresses, dns, hooks) where one was stored: an empty conf list yields to a
    source that has values (merge.EMPTY_YIELDS), so with that source failed the empty
    list is no news, and writing it would make a new version every time it flaps.
    """
    out = [n if n is not None else o for o, n in zip(old, new, strict=True)]
    idx = {f: i for i, f in enumerate(fields)}
    kept = {f for f, o, n in zip(fields, old, new, strict=True) if n is None and o is not None}
    for name in EMPTY_YIELDS:
        i = idx.get(name)
        if i is not None and not new[i] and old[i]:
            out[i] = old[i]
            kept.add(name)
    for flag, fp in _PAIRS:
        if flag in idx and new[idx[flag]] is not None:
            out[idx[fp]] = new[idx[fp]]
    if "sources" in idx:
        i = idx["sources"]
        out[i] = sorted(set(old[i] or ()) | set(new[i] or ()))
    if "provenance" in idx:
        i = idx["provenance"]
        old_prov, prov = old[i] or {}, {**(old[i] or {}), **(new[i] or {})}
        for name in kept:  # a value kept from the stored row keeps the source it had
            model = _MODEL_NAME.get(name, name)
            if model in old_prov:
                prov[model] = old_prov[model]
        out[i] = prov
    return tuple(out)


# the few columns whose model field (provenance key) has another name
_MODEL_NAME = {"table_name": "table"}


# the one compact canonical encoder (wgsyncd.canonical): a shared encoder, not json.dumps
# with options per call (35% faster at 10k peers)
HASH_ENCODER = COMPACT
# the same encoding from the C encoder built once: JSONEncoder.encode builds a new one on
# every call, a third of row_hash at 10,000 rows (tests/unit/store/test_values.py checks
# both agree); None where the json C accelerator is missing
_ROW_ENCODER = (
    json.encoder.c_make_encoder(
        None, str, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, True
    )
    if json.encoder.c_make_encoder is not None
    else None
)


def row_hash(key: Sequence[Any], values: Sequence[Any]) -> str:
    """A stable hash of a row's config, stored so other readers can compare cheaply."""
    if _ROW_ENCODER is not None:
        blob = "".join(_ROW_ENCODER((key, values), 0))
    else:
        blob = HASH_ENCODER.encode([list(key), list(values)])
    return hashlib.sha256(blob.encode()).hexdigest()
