"""A HostState as the spool keeps it: every field the writer needs, no clear secret.

The writer needs three things from a secret: whether there is one, its
fingerprint (peer rows), and -- for config versions -- the sha256 of the
interface's clear secrets plus the blob sealed to the recovery key. So a
spooled state keeps exactly those: fingerprints and sha256 digests, and each
interface's secrets sealed at spool time, the way store/versions.py seals them.
The spool then holds nothing the database would not hold, replay never needs a
clear secret, and a stolen spool file opens nothing without the recovery key.

Decoding gives back the same dataclasses with ``SealedSecret`` stand-ins (which
refuse to reveal) and ``SpooledInterface`` (an Interface carrying its pre-sealed
secrets), so replay goes through store.write_cycle like a live cycle.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from wgsyncd import secrets as sealing
from wgsyncd.state import (
    Drift,
    DriftKind,
    HostState,
    Interface,
    Peer,
    Source,
    SourceError,
    key_fingerprint,
    public_key_from_private,
)

FORMAT = 1
_SECRET_FIELDS = {"private_key", "preshared_key", "conf_text"}
_TIME_FIELDS = {"latest_handshake"}
_SKIP = {"peers", "provenance", "seen_by"}


class SealedSecret:
    """A secret the spool only knows by its digests; ``reveal`` refuses (and says why)."""

    __slots__ = ("_fp", "_sha")

    def __init__(self, fp: str, sha: str) -> None:
        self._fp, self._sha = fp, sha

    def reveal(self) -> str:
        """Never: the clear value was not spooled."""
        raise RuntimeError("a spooled secret has no clear value (it was sealed when spooled)")

    def fingerprint(self) -> str:
        """The fingerprint the live Secret had (state.Secret.fingerprint)."""
        return self._fp

    def sha256(self) -> str:
        """The sha256 the live Secret had (state.Secret.sha256)."""
        return self._sha

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return "SealedSecret(<redacted>)"

    __str__ = __repr__


@dataclass(frozen=True)
class Presealed:
    """One interface's secrets as store/versions.py would store them: digest, key fp, blob."""

    sha256: str
    sealed_to: str | None
    blob: bytes | None


@dataclass(slots=True)
class SpooledInterface(Interface):
    """An Interface from the spool: its secrets come pre-sealed (store/versions.py uses them)."""

    presealed: Presealed | None = None


def _secret(value: Any) -> dict[str, str] | None:
    """A live or spooled secret -> its digests; None stays None (empty is kept as empty)."""
    if value is None:
        return None
    if not value:
        return {"fp": "", "sha": "", "empty": "1"}
    return {"fp": value.fingerprint(), "sha": value.sha256()}


def _unsecret(data: dict[str, str] | None) -> Any:
    """Digests -> a SealedSecret (an empty secret stays falsy)."""
    if data is None:
        return None
    if data.get("empty"):
        from wgsyncd.state import Secret

        return Secret("")
    return SealedSecret(data["fp"], data["sha"])


def _obj(obj: Any) -> dict[str, Any]:
    """The plain fields of an Interface or Peer, secrets replaced by digests."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.name in _SKIP or f.name == "presealed":
            continue
        value = getattr(obj, f.name)
        if f.name in _SECRET_FIELDS:
            value = _secret(value)
        elif f.name in _TIME_FIELDS and value is not None:
            value = value.isoformat()
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    out["provenance"] = {k: str(v) for k, v in obj.provenance.items()}
    out["seen_by"] = [str(s) for s in obj.seen_by]
    return out


def _unobj(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Constructor kwargs for ``cls`` from ``_obj``'s output."""
    kwargs: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in names:
            continue
        if key in _SECRET_FIELDS:
            value = _unsecret(value)
        elif key in _TIME_FIELDS and value is not None:
            value = datetime.fromisoformat(value)
        elif key == "provenance":
            value = {k: Source(v) for k, v in value.items()}
        elif key == "seen_by":
            value = tuple(Source(s) for s in value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return kwargs


def _preseal(iface: Interface, recovery_public: str | None) -> dict[str, Any]:
    """Seal one interface's clear secrets now, as the config version would."""
    existing = getattr(iface, "presealed", None)
    if existing is not None:
        return {
            "sha256": existing.sha256,
            "sealed_to": existing.sealed_to,
            "blob": base64.b64encode(existing.blob).decode() if existing.blob else None,
        }
    from wgsyncd.store import versions

    clear = versions.interface_secrets(iface)
    blob = sealing.seal_json(recovery_public, clear) if recovery_public else None
    return {
        "sha256": versions.secrets_sha256(clear),
        "sealed_to": key_fingerprint(recovery_public) if recovery_public else None,
        "blob": base64.b64encode(blob).decode() if blob else None,
    }


def encode(state: HostState, recovery_public: str | None) -> bytes:
    """The spool entry body for ``state``: zlib-compressed JSON, without any clear secret."""
    ifaces = []
    for iface in state.interfaces.values():
        data = _obj(iface)
        if iface.private_key and not iface.public_key:
            data["public_key"] = public_key_from_private(iface.private_key)
        data["presealed"] = _preseal(iface, recovery_public)
        data["peers"] = [_obj(p) for p in iface.peers.values()]
        ifaces.append(data)
    doc = {
        "format": FORMAT,
        "host_id": state.host_id,
        "hostname": state.hostname,
        "collected_at": state.collected_at.isoformat(),
        "interfaces": ifaces,
        "drift": [
            [d.interface, d.peer, d.field, str(d.kind), [list(v) for v in d.values]] for d in state.drift
        ],
        "errors": [[str(e.source), e.where, e.message, e.interface] for e in state.errors],
        "sources": {str(k): v for k, v in state.sources.items()},
        "interface_ids": state.interface_ids,
    }
    return zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 6)


def decode(body: bytes) -> HostState:
    """A spool entry body back to a HostState the writer can write (ValueError if damaged)."""
    try:
        doc = json.loads(zlib.decompress(body))
    except (zlib.error, ValueError) as exc:
        raise ValueError(f"damaged spool entry: {type(exc).__name__}") from None
    if doc.get("format") != FORMAT:
        raise ValueError(f"spool entry format {doc.get('format')!r} is not {FORMAT}")
    interfaces: dict[str, Interface] = {}
    for data in doc["interfaces"]:
        pre = data.get("presealed")
        peers = {p["public_key"]: Peer(**_unobj(Peer, p)) for p in data.get("peers", [])}
        iface = SpooledInterface(**_unobj(SpooledInterface, data))
        iface.peers = peers
        if pre is not None:
            blob = base64.b64decode(pre["blob"]) if pre.get("blob") else None
            iface.presealed = Presealed(pre["sha256"], pre.get("sealed_to"), blob)
        interfaces[iface.name] = iface
    return HostState(
        host_id=doc["host_id"],
        hostname=doc["hostname"],
        collected_at=datetime.fromisoformat(doc["collected_at"]),
        interfaces=interfaces,
        drift=[
            Drift(i, p, f, DriftKind(k), tuple(tuple(v) for v in vals)) for i, p, f, k, vals in doc["drift"]
        ],
        errors=[SourceError(Source(s), w, m, i) for s, w, m, i in doc["errors"]],
        sources={Source(k): bool(v) for k, v in doc["sources"].items()},
        interface_ids=dict(doc.get("interface_ids") or {}),
    )
