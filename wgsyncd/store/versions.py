"""Config history: one version per change of a host's configuration, secrets sealed per interface.

Why this shape:

- A version is made only when its content hash differs from the latest version's,
  so an idle cycle writes nothing and runtime (handshakes, counters) never makes one.
- The hash is computed on the host over the public document AND the secrets (each
  interface's document names the sha256 of its clear secrets). A sha256 over 256-bit
  random keys reveals nothing, so storing it is safe, and it means a rotated
  preshared key makes a version even when no recovery key is configured.
- Secrets are sealed to the operator's recovery public key, one blob per interface,
  stored once and addressed by (sha256 of the clear secrets, recovery key). The host
  can write blobs but never open them; that is why an interface whose read failed
  this cycle carries its previous document *including its secrets reference*
  forward, instead of recording a half view.
- Endpoints: the document holds the running (merged) endpoint, but a kernel-learned
  endpoint is left out of the hash: a roaming client moving between networks must
  not make a version every time. A configured endpoint still counts: it is in the
  conf text, whose sha256 is part of the secrets hash, and a wgrest/conf-only
  endpoint is hashed as it is. The endpoint recorded for a kernel peer is the one
  seen when the version was made for some other reason.
- Peer order is not part of the hash: wireguard-go lists peers in a new order on
  every read. A conf file's order survives in its raw text, byte for byte.

This module speaks SQL only through the writer's transaction (``record``); the
readers (history, restore) are store/history.py. It never parses conf files.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.types.json import Jsonb

from wgsyncd import secrets as sealing
from wgsyncd import signing
from wgsyncd.canonical import signed_bytes, signed_chunks, signed_joined
from wgsyncd.state import HostState, Interface, Peer, Source, key_fingerprint, public_key_from_private
from wgsyncd.store import signed
from wgsyncd.store.history import (  # noqa: F401  (callers find the readers here too)
    Version,
    VersionRow,
    first_version_time,
    host_known,
    list_versions,
    load_sealed,
    load_version,
)
from wgsyncd.store.known import Head

log = logging.getLogger(__name__)

DOC_FORMAT = 1


@dataclass(frozen=True, slots=True)
class _JsonText:
    """JSON text already encoded (UTF-8), sent to a jsonb parameter as it is."""

    data: bytes


class _JsonTextDumper(Dumper):
    """The bytes as the parameter's text: no str decoded from them, none encoded again.

    Why: a 10,000-peer version document is ~3 MiB; as a str it was decoded from its
    bytes and encoded back by psycopg, two more copies at the first write's peak.
    Public psycopg API (3.1 on Debian, current releases alike).
    """

    oid = psycopg.postgres.types["jsonb"].oid

    def dump(self, obj: Any) -> bytes:
        """The text itself."""
        return obj.data


# ---------------------------------------------------------------- building content (pure)


def _list(value: tuple[str, ...] | None) -> list[str] | None:
    """Tuples as lists (JSON), None kept: unknown is not the same as empty."""
    return None if value is None else list(value)


def interface_secrets(iface: Interface) -> dict[str, Any]:
    """Every secret of one interface as a clear dict; it only ever leaves the host sealed."""
    return {
        "private_key": iface.private_key.reveal() if iface.private_key else None,
        "conf_text": iface.conf_text.reveal() if iface.conf_text is not None else None,
        "preshared_keys": {
            p.public_key: p.preshared_key.reveal() for p in iface.peers.values() if p.preshared_key
        },
        "peer_private_keys": {
            p.public_key: p.private_key.reveal() for p in iface.peers.values() if p.private_key
        },
    }


def secrets_sha256(secrets: dict[str, Any]) -> str:
    """sha256 of the canonical secrets JSON: safe to store (256-bit keys inside), exact to compare."""
    return hashlib.sha256(signed_bytes(secrets)).hexdigest()


_KERNEL = str(Source.KERNEL)


def _peer_doc(peer: Peer, hashed: bool = False) -> dict[str, Any]:
    """A peer's public fields; secrets appear only as "there is one".

    ``hashed``: as the version hash sees it, a kernel-learned endpoint left out (module doc).
    """
    src = peer.provenance.get("endpoint")
    return {
        "public_key": peer.public_key,
        "allowed_ips": _list(peer.allowed_ips),
        "endpoint": None if hashed and src is not None and str(src) == _KERNEL else peer.endpoint,
        "endpoint_source": str(src) if src is not None else None,
        "persistent_keepalive": peer.persistent_keepalive,
        "name": peer.name,
        "comments": _list(peer.comments),
        "disabled": peer.disabled,
        "has_preshared_key": bool(peer.preshared_key),
        "has_private_key": bool(peer.private_key),
    }


class PeerList(Sequence[dict[str, Any]]):
    """An interface's ``peers`` in a version document built on this host: encoded peer by peer.

    Why: at 10,000 peers a dict per peer, the whole document as text and the hash's
    sorted view of it were ~12 MiB at once, the first write's memory peak. This keeps
    the state's peers and makes each peer's dict only while it is encoded
    (canonical.signed_chunks), once for the stored text and once for the hash.
    Indexing and iterating give the same dicts a parsed document holds.
    """

    __slots__ = ("_peers",)

    def __init__(self, peers: Iterable[Peer]) -> None:
        self._peers = tuple(peers)

    def __len__(self) -> int:
        return len(self._peers)

    def __getitem__(self, index):  # type: ignore[override]  # Sequence's int and slice forms
        if isinstance(index, slice):
            return [_peer_doc(p) for p in self._peers[index]]
        return _peer_doc(self._peers[index])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # a list's stand-in: unhashable like one

    def canonical_chunks(self, hashed: bool = False) -> Iterator[bytes]:
        """The JSON array, one peer at a time; ``hashed``: the hash's view (content_sha256)."""
        peers = sorted(self._peers, key=lambda p: p.public_key) if hashed else self._peers
        sep = b"["
        for peer in peers:
            yield sep
            yield signed_bytes(_peer_doc(peer, hashed))
            sep = b","
        yield b"]" if sep == b"," else b"[]"


@dataclass(frozen=True, slots=True)
class _HashedPeers:
    """A PeerList as the version hash encodes it: sorted by key, kernel endpoints null."""

    peers: PeerList

    def canonical_chunks(self) -> Iterator[bytes]:
        """See PeerList.canonical_chunks."""
        return self.peers.canonical_chunks(hashed=True)


def _public_key(iface: Interface) -> str | None:
    """The interface's public key, derived from the private key when no source gave it."""
    if iface.public_key:
        return iface.public_key
    return public_key_from_private(iface.private_key) if iface.private_key else None


def interface_doc(iface: Interface, secrets_ref: dict[str, Any]) -> dict[str, Any]:
    """The public document of one interface: wg-quick fields, keys, conf path, peers in order."""
    return {
        "name": iface.name,
        "public_key": _public_key(iface),
        "listen_port": iface.listen_port,
        "fwmark": iface.fwmark,
        "addresses": _list(iface.addresses),
        "dns": _list(iface.dns),
        "mtu": iface.mtu,
        "table": iface.table,
        "pre_up": _list(iface.pre_up),
        "post_up": _list(iface.post_up),
        "pre_down": _list(iface.pre_down),
        "post_down": _list(iface.post_down),
        "save_config": iface.save_config,
        "conf_path": iface.conf_path,
        "comments": _list(iface.comments),
        "implementation": iface.implementation,
        "has_private_key": bool(iface.private_key),
        "has_conf_text": iface.conf_text is not None,
        "secrets": secrets_ref,
        "peers": PeerList(iface.peers.values()),
    }


def content_sha256(doc: dict[str, Any]) -> str:
    """The version hash: the document minus kernel-learned endpoints (see the module doc).

    Builds a shallow view instead of deep-copying the document (10k peers: 0.35 s -> ~0.02 s),
    and hashes it in pieces (canonical.signed_chunks): the view is never whole text.
    """
    ifaces = {}
    for name, iface in doc["interfaces"].items():
        # wireguard-go lists peers in a different order on every read; a conf's order is
        # kept in its raw text (hashed with the secrets), so order is not identity here
        peers = iface["peers"]
        if isinstance(peers, PeerList):
            view: Any = _HashedPeers(peers)
        else:  # a document read back from the database, carried forward
            view = [
                {**p, "endpoint": None} if p.get("endpoint_source") == _KERNEL else p
                for p in sorted(peers, key=lambda p: p["public_key"])
            ]
        ifaces[name] = {**iface, "peers": view}
    digest = hashlib.sha256()
    for chunk in signed_chunks({**doc, "interfaces": ifaces}):
        digest.update(chunk)
    return digest.hexdigest()


def interface_complete(state: HostState, name: str) -> bool:
    """Whether this cycle read ``name`` fully; the same rule the writer uses for removals."""
    return bool(state.sources) and all(state.sources.values()) and not state.incomplete(name)


@dataclass
class Content:
    """One host's version content: the public doc, the fresh secrets to seal, and the hash."""

    doc: dict[str, Any]
    fresh: dict[str, dict[str, Any]]  # interface -> clear secrets, only those read this cycle
    sha256: str
    # interface -> blob already sealed (a cycle replayed from the spool, wgsyncd/spooled.py)
    presealed: dict[str, bytes] = field(default_factory=dict)
    unparsed: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # name -> (sha, clear)


def build_content(state: HostState, recovery_public: str | None, previous: dict[str, Any] | None) -> Content:
    """The version content for ``state``; interfaces read incompletely come from ``previous``.

    An interface missing from the state is kept from ``previous`` unless the cycle could
    have seen it (complete read): then it is really gone.
    """
    fp = key_fingerprint(recovery_public) if recovery_public else None
    prev_ifaces: dict[str, Any] = (previous or {}).get("interfaces", {})
    out: dict[str, Any] = {}
    fresh: dict[str, dict[str, Any]] = {}
    presealed: dict[str, bytes] = {}
    for name in sorted(set(state.interfaces) | set(prev_ifaces)):
        if not interface_complete(state, name) and name in prev_ifaces:
            out[name] = prev_ifaces[name]
            continue
        iface = state.interfaces.get(name)
        if iface is None:
            continue  # read completely and not there: removed
        pre = getattr(iface, "presealed", None)  # spooled: sealed when it was read
        if pre is not None:
            out[name] = interface_doc(iface, {"sha256": pre.sha256, "sealed_to": pre.sealed_to})
            if pre.blob is not None:
                presealed[name] = pre.blob
            continue
        clear = interface_secrets(iface)
        ref = {"sha256": secrets_sha256(clear), "sealed_to": fp}
        out[name] = interface_doc(iface, ref)
        fresh[name] = clear
    unparsed = _unparsed_confs(state, fp, out, fresh)
    doc = {"format": DOC_FORMAT, "interfaces": out}
    return Content(doc=doc, fresh=fresh, sha256=content_sha256(doc), presealed=presealed, unparsed=unparsed)


def _unparsed_confs(
    state: HostState, fp: str | None, out: dict[str, Any], fresh: dict[str, dict[str, Any]]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Conf files wg-quick would refuse: their raw text is sealed on its own and referenced
    as ``unparsed_conf`` beside the interface's last good (or kernel-only) document, so a
    broken file is backed up and makes a version when it changes, but is never restored
    as if it had been understood."""
    sealed: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, (path, text) in sorted(state.unparsed.items()):
        if name not in out:
            empty = Interface(name=name, conf_path=path)
            fresh[name] = interface_secrets(empty)
            out[name] = interface_doc(empty, {"sha256": secrets_sha256(fresh[name]), "sealed_to": fp})
        clear = {"conf_text": text.reveal()}
        ref = {"sha256": secrets_sha256(clear), "sealed_to": fp, "conf_path": path}
        out[name] = {**out[name], "unparsed_conf": ref}
        sealed[name] = (ref["sha256"], clear)
    return sealed


# ---------------------------------------------------------------- writing (inside write_cycle)


# the status of the host's previous cycle (this cycle's row is inserted after record())
_LAST_STATUS = "(SELECT status FROM sync_status WHERE host_id = %s ORDER BY started_at DESC, id DESC LIMIT 1)"


def record(
    tx: Any,
    state: HostState,
    now: datetime,
    sync_id: uuid.UUID,
    recovery_public: str | None,
    config_rows_written: int | None = None,
    head: Head | None = None,
    signer: signing.Signer | None = None,
    ahead: Future[tuple[Content, bytes]] | None = None,
) -> tuple[int | None, Head | None]:
    """Add a config version when the content changed; return (its number or None, the new head).

    ``tx`` is the writer's counting cursor, so this runs in the cycle's transaction
    under the lock of the host's own hosts row (version numbers cannot race). ``head``: the
    latest version as the writer knows it is still current (store/known.py); None
    reads it from the database.

    Fast path: a complete cycle that wrote no config row cannot have new content
    (every field and secret of a version is reflected in a config row or its
    fingerprint, and the rows were written in the same transaction as the version
    that holds them), so building and hashing the whole document is skipped unless
    the recovery key changed since the latest version.

    ``signer`` (the agent always passes one): the version is signed and chained, and
    a latest row read from the database is first judged against the host's record of
    what it signed last (store/signed.py ``judge_latest``); a row that is not the host's own forces a
    new version and is never carried forward. ``ahead``: the content of a complete
    read, being built on a worker thread (store/ahead.py).
    """
    status = "partial" if state.partial else "ok"
    need_doc = not (state.sources and all(state.sources.values()) and not state.errors)
    # the fast path also needs the previous cycle to have been complete: a partial one
    # may have written config rows while carrying an interface's old document forward,
    # so "no row written now" would then leave that change out of every later version
    current_fp = key_fingerprint(recovery_public) if recovery_public else None
    previous: dict[str, Any] | None = None
    if signer is not None:
        signer.begin()
        if head is not None and (head.link is None or signed.latest_link(tx, state.host_id) != head.link):
            head = None  # not (or no longer) the version this process signed: read and judge the row
    latest: signing.Signed | None = None
    from_db = head is None or need_doc
    if from_db:
        cols = f"version, content_sha256, recovery_key_fp, {_LAST_STATUS}, {signed.SIGNED_COLS}"
        row = tx.execute(
            f"SELECT {cols}{', doc' if need_doc else ''} FROM config_versions "
            "WHERE host_id = %s ORDER BY version DESC LIMIT 1",
            (state.host_id, state.host_id),
        ).fetchone()
        if row is not None:
            latest = signed.from_row(row[4:])
            head = Head(row[0], row[1], row[2], row[3], latest.link() if latest.signature else None)
            previous = row[4 + signed.N_SIGNED] if need_doc else None
    prev_link, floor, force = (head.link if head else None), (head.version if head else 0), False
    if signer is not None and from_db:
        prev_link, previous, force, floor = signed.judge_latest(
            tx, state.host_id, signer, latest, previous, floor
        )
        if force and need_doc and latest is not None and previous is None:
            # an incomplete cycle would have to carry documents forward from a row this host
            # did not sign: wait for a complete cycle rather than record a half view
            log.warning("host %s: no version this cycle: the read was incomplete", state.host_id)
            return None, Head(head.version, head.sha256, head.recovery_key_fp, status) if head else None
    unchanged = config_rows_written == 0 and not need_doc
    if (
        not force
        and unchanged
        and head is not None
        and head.last_status == "ok"
        and head.recovery_key_fp == current_fp
    ):
        return None, Head(head.version, head.sha256, head.recovery_key_fp, status, head.link)
    doc_text: bytes | None = None
    if ahead is not None and not need_doc:  # complete: ``previous`` cannot change the content
        content, doc_text = ahead.result()
    else:
        content = build_content(state, recovery_public, previous)
    if not force and head is not None and head.sha256 == content.sha256:
        return None, Head(head.version, head.sha256, head.recovery_key_fp, status, head.link)
    version = floor + 1
    if doc_text is None:
        doc_text = signed_joined(content.doc)  # encoded once: hashed for the signature and stored
    _store_secrets(tx, state.host_id, now, content, recovery_public)
    ifaces = content.doc["interfaces"].values()
    refs = [i["secrets"]["sealed_to"] for i in ifaces]
    sig: tuple[Any, ...] = (None, None, None, None, None)
    link = None
    if signer is not None:
        fields = signing.Signed(
            state.host_id,
            version,
            prev_link or signing.GENESIS,
            now,
            content.sha256,
            hashlib.sha256(doc_text).hexdigest(),  # = signing.doc_sha256 of the document read back
            signed.blob_hashes(tx, state.host_id, content.doc),
            current_fp,
            signer.key.verify_key,
        )
        link = fields.link()
        sig = (fields.prev, fields.doc_sha256, Jsonb(fields.sealed), fields.signing_key)
        sig += (signer.key.sign(fields.message()),)
        signer.pending = signing.LastSigned(version, link)
    tx.cur.connection.adapters.register_dumper(_JsonText, _JsonTextDumper)
    tx.execute_large(
        "INSERT INTO config_versions (host_id, version, created_at, sync_id, content_sha256, doc, "
        "interfaces, peers, sealed, recovery_key_fp, prev_sha256, doc_sha256, sealed_sha256, signing_key, "
        "signature) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            state.host_id,
            version,
            now,
            sync_id,
            content.sha256,
            _JsonText(doc_text),
            len(refs),
            sum(len(i["peers"]) for i in ifaces),
            all(r is not None for r in refs),
            current_fp,
            *sig,
        ),
    )
    return version, Head(version, content.sha256, current_fp, status, link)


def _store_secrets(
    tx: Any, host_id: str, now: datetime, content: Content, recovery_public: str | None
) -> None:
    """Seal each interface's fresh secrets (and unparsed conf texts) once; a blob already
    stored is not written again. Pre-sealed blobs (a spooled cycle) are stored under the
    key they were sealed to."""
    rows = []
    for name, blob in sorted(content.presealed.items()):
        ref = content.doc["interfaces"][name]["secrets"]
        rows.append((host_id, name, ref["sha256"], ref["sealed_to"], blob, now))
    if recovery_public and (content.fresh or content.unparsed):
        fp = key_fingerprint(recovery_public)
        for name, clear in sorted(content.fresh.items()):
            sha = content.doc["interfaces"][name]["secrets"]["sha256"]
            rows.append((host_id, name, sha, fp, sealing.seal_json(recovery_public, clear), now))
        for name, (sha, clear) in sorted(content.unparsed.items()):
            rows.append((host_id, name, sha, fp, sealing.seal_json(recovery_public, clear), now))
    # one statement per sealed blob, not executemany: psycopg runs that in pipeline mode,
    # which with parameters this large (a 10,000-peer conf sealed) can deadlock (writer.py)
    for row in rows:
        tx.execute_large(
            "INSERT INTO config_secrets (host_id, interface, secrets_sha256, recovery_key_fp, sealed, "
            "created_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            row,
        )
