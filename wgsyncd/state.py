"""The typed model every room shares: host, interfaces, peers, keys, provenance.

Sources return it, merge combines it, the store writes it, restore reads it back.
No I/O here. A field left as ``None`` means "this source does not know", which is
different from an empty tuple ("this source knows there is nothing").
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import operator
import re
from collections.abc import Callable
from dataclasses import FrozenInstanceError, dataclass, field, fields
from datetime import datetime
from typing import Any

from nacl.bindings import crypto_scalarmult_base


class Source(enum.StrEnum):
    """Where a value came from."""

    KERNEL = "kernel"
    CONF = "conf"
    WGREST = "wgrest"


class StateError(ValueError):
    """A value that cannot be a valid piece of WireGuard state; names the field."""


@dataclass(frozen=True, slots=True)
class Secret:
    """A private key, preshared key, token or raw conf text.

    Its repr and str never show the value, so a secret that ends up in a log line,
    an f-string or an exception message shows as ``<redacted>`` instead.
    """

    _value: str = field(repr=False)

    def reveal(self) -> str:
        """The clear value; call only where the value must leave the process."""
        return self._value

    def fingerprint(self) -> str:
        """A short, stable, non-reversible id (sha256) to compare secrets without showing them."""
        return hashlib.sha256(self._value.encode()).hexdigest()[:16]

    def sha256(self) -> str:
        """The full sha256 of the value, hex (a spooled stand-in knows it without the value)."""
        return hashlib.sha256(self._value.encode()).hexdigest()

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    def __str__(self) -> str:
        return "<redacted>"

    def __bool__(self) -> bool:
        return bool(self._value)


def parse_key(text: str, where: str) -> str:
    """Check that ``text`` is a base64 WireGuard key (32 bytes) and return it.

    ``where`` names the file/URL/field for the error. The value itself is never put
    in the message: it may be a private key.
    """
    value = text.strip()
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise StateError(f"{where}: not a base64 WireGuard key") from None
    if len(raw) != 32 or len(value) != 44:
        raise StateError(f"{where}: key must be 32 bytes (44 base64 chars), got {len(raw)} bytes")
    if base64.b64encode(raw).decode() != value:
        # wg's key_from_base64 refuses non-zero padding bits; accepting them would give
        # one key two spellings (a conf peer and its kernel peer would not match)
        raise StateError(f"{where}: not a canonical base64 WireGuard key (padding bits set)")
    return value


def public_key_from_private(private: Secret) -> str:
    """Derive the X25519 public key, so sources that only know the private key agree.

    libsodium (PyNaCl, already a dependency) does the scalar multiplication: constant
    time, clamps the scalar as WireGuard does, ~50 us, so nothing is cached.
    """
    raw = base64.b64decode(private.reveal())
    if len(raw) != 32:
        raise StateError("private key must be 32 bytes")
    return base64.b64encode(crypto_scalarmult_base(raw)).decode()


def key_fingerprint(public_key: str) -> str:
    """The fingerprint stored next to a public key: sha256 of the raw key, hex."""
    return hashlib.sha256(base64.b64decode(public_key)).hexdigest()


@dataclass(slots=True)
class Peer:
    """One [Peer] of one interface, as one source (or the merge) sees it.

    Slots and shared provenance dicts (see ``shared``): a 10,000-peer host holds
    four copies of every peer (three sources and the merge), so the per-object
    overhead is most of the agent's memory.
    """

    public_key: str
    preshared_key: Secret | None = None
    allowed_ips: tuple[str, ...] | None = None
    endpoint: str | None = None
    persistent_keepalive: int | None = None  # seconds; 0 = off
    # runtime, kernel only
    latest_handshake: datetime | None = None  # None = never
    rx_bytes: int | None = None
    tx_bytes: int | None = None
    # conf and wgrest metadata
    name: str | None = None
    comments: tuple[str, ...] | None = None  # comment lines attached to the peer
    disabled: bool | None = None  # commented out with `#! ` (conf) or otherwise inactive
    private_key: Secret | None = None  # the peer's own key, from wgrest v1's data dir
    # which source gave each field, filled by sources (one value) and by merge
    provenance: dict[str, Source] = field(default_factory=dict)
    # which sources have this peer at all (set by merge; a source leaves it empty)
    seen_by: tuple[Source, ...] = ()


_SHARED: dict[tuple[tuple[str, Source], ...], dict[str, Source]] = {}
INTERN_MAX = 4096  # distinct values per intern table; they are few, but never grow without bound


def interned(table: dict[Any, Any], key: Any, make: Callable[[], Any]) -> Any:
    """The one shared object for ``key`` in ``table`` (``make()`` builds it the first time).

    For values repeated thousands of times per cycle (provenance maps, source lists):
    the caller must never change what it gets back.
    """
    hit = table.get(key)
    if hit is None:
        hit = make()
        if len(table) < INTERN_MAX:
            table[key] = hit
    return hit


def shared(provenance: dict[str, Source]) -> dict[str, Source]:
    """One shared dict per distinct provenance (thousands of peers have the same few).

    Only for a finished object: the dict returned may be shared, so it must never
    be changed afterwards (nothing changes source or merged objects once built).
    """
    return interned(_SHARED, tuple(provenance.items()), lambda: provenance)


# wg-quick's rule for a conf file name; the interface name is the part before .conf
# (conf reader and restore both hold names to it: a name from the DB is untrusted)
CONF_NAME_RE = re.compile(r"^[a-zA-Z0-9_=+.-]{1,15}\.conf$")

# The peer fields WireGuard itself reports for every peer (`wg show dump`, netlink,
# UAPI, and wgrest which reads them from the kernel): a source that speaks to
# WireGuard knows them all, so None there is a fact ("no endpoint", "never").
WIRE_PEER_FIELDS = (
    "public_key",
    "preshared_key",
    "allowed_ips",
    "endpoint",
    "persistent_keepalive",
    "latest_handshake",
    "rx_bytes",
    "tx_bytes",
)


@dataclass(slots=True)
class Interface:
    """One WireGuard interface with its wg-quick fields and its peers."""

    name: str
    private_key: Secret | None = None
    public_key: str | None = None
    listen_port: int | None = None
    fwmark: int | None = None  # 0 = off
    # wg-quick fields (conf files; wgrest v2 has some)
    addresses: tuple[str, ...] | None = None
    dns: tuple[str, ...] | None = None
    mtu: int | None = None
    table: str | None = None
    pre_up: tuple[str, ...] | None = None
    post_up: tuple[str, ...] | None = None
    pre_down: tuple[str, ...] | None = None
    post_down: tuple[str, ...] | None = None
    save_config: bool | None = None
    # where it came from
    conf_path: str | None = None
    conf_text: Secret | None = None  # raw file, holds the private key
    comments: tuple[str, ...] | None = None  # comment lines of the [Interface] section
    implementation: str | None = None  # "kernel" | "userspace"
    peers: dict[str, Peer] = field(default_factory=dict)  # by public key, in file/kernel order
    provenance: dict[str, Source] = field(default_factory=dict)
    seen_by: tuple[Source, ...] = ()  # set by merge, like Peer.seen_by


def _sealed_class(base: type) -> type:
    """A subclass of ``base`` whose instances refuse every edit (FrozenInstanceError).

    Why not frozen=True on Peer/Interface themselves: sources build these objects
    field by field and frozen construction costs about twice as much per object (40,000
    objects per cycle at 10,000 peers). Sealing swaps the class of a finished object in
    place (same slots, no copy), so what the memos keep between cycles cannot be edited
    by mistake. dataclasses.replace() on a sealed object gives a new, editable ``base``.
    """
    names = [f.name for f in fields(base)]
    key = operator.attrgetter(*names)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # replace() (a call with fields) builds an editable copy
        return base(*args, **kwargs) if args or kwargs else object.__new__(cls)

    def __setattr__(self: Any, name: str, _value: Any) -> None:
        raise FrozenInstanceError(f"{base.__name__} is sealed (shared between cycles): cannot set {name!r}")

    def __delattr__(self: Any, name: str) -> None:
        raise FrozenInstanceError(f"{base.__name__} is sealed (shared between cycles): cannot del {name!r}")

    def __reduce__(self: Any) -> tuple[type, tuple[Any, ...]]:
        # pickled (timer-mode cache) as the editable base: one constructor call per object,
        # the loader seals again (wgsyncd/synccache.py)
        return base, key(self)

    def __eq__(self: Any, other: Any) -> bool:
        return key(self) == key(other) if isinstance(other, base) else NotImplemented

    body = {"__slots__": (), "__new__": __new__, "__setattr__": __setattr__, "__delattr__": __delattr__,
            "__reduce__": __reduce__, "__eq__": __eq__, "__hash__": None}  # fmt: skip
    return type(f"Sealed{base.__name__}", (base,), body)


SealedPeer = _sealed_class(Peer)
SealedInterface = _sealed_class(Interface)


def seal(iface: Interface) -> Interface:
    """Make ``iface`` and its peers refuse edits from now on (in place; returns it).

    Called on every source result and every merged interface: these are the objects
    the between-cycle memo (wgsyncd/memo.py) hands back next cycle.
    """
    for peer in iface.peers.values():
        seal_peer(peer)
    if type(iface) is Interface:
        iface.__class__ = SealedInterface
    return iface


def seal_peer(peer: Peer) -> Peer:
    """Make one Peer refuse edits from now on (in place; returns it)."""
    if type(peer) is Peer:
        peer.__class__ = SealedPeer
    return peer


@dataclass(frozen=True)
class SourceError:
    """One problem one source had; ``where`` names the file, URL or field.

    ``interface`` is the interface the problem is confined to, or None when the
    whole source failed. The store neither removes nor blanks anything of an
    interface that had an error this cycle.
    """

    source: Source
    where: str
    message: str
    interface: str | None = None

    def __str__(self) -> str:
        return f"{self.source}: {self.where}: {self.message}"


@dataclass
class SourceResult:
    """What one source read: the interfaces it knows, and what went wrong.

    ``available`` is False when the source is not there at all (no wgrest
    configured, no conf dir); such a source does not make a cycle partial.
    """

    source: Source
    interfaces: dict[str, Interface] = field(default_factory=dict)
    errors: list[SourceError] = field(default_factory=list)
    available: bool = True
    # conf files read but refused (a parse error above): interface -> (path, raw text),
    # so the text is still sealed and backed up (store/versions.py)
    unparsed: dict[str, tuple[str, Secret]] = field(default_factory=dict)


class DriftKind(enum.StrEnum):
    """The ways sources can disagree."""

    ONLY_IN = "only_in"  # interface or peer present in some sources only
    MISSING_FROM = "missing_from"
    DIFFERS = "differs"


@dataclass(frozen=True)
class Drift:
    """One disagreement between sources, for the drift report and sync_status."""

    interface: str
    peer: str | None  # public key, or None for an interface-level drift
    field: str  # "peer", "interface", or a field name like "allowed_ips"
    kind: DriftKind
    values: tuple[tuple[str, str], ...]  # (source, value as text), never secrets

    def __str__(self) -> str:
        what = f"{self.interface}" + (f" peer {self.peer}" if self.peer else "")
        vals = ", ".join(f"{s}={v}" for s, v in self.values)
        return f"{what}: {self.field} {self.kind}: {vals}"


@dataclass
class HostState:
    """One host's merged state for one cycle: what the store writes."""

    host_id: str
    hostname: str
    collected_at: datetime
    interfaces: dict[str, Interface] = field(default_factory=dict)
    drift: list[Drift] = field(default_factory=list)
    errors: list[SourceError] = field(default_factory=list)
    sources: dict[Source, bool] = field(default_factory=dict)  # source -> read fully
    # interface -> which incarnation the counters were read from (sources/identity.py);
    # a change means the counters restarted, whatever their values say
    interface_ids: dict[str, str] = field(default_factory=dict)
    unparsed: dict[str, tuple[str, Secret]] = field(default_factory=dict)  # see SourceResult

    @property
    def partial(self) -> bool:
        """True when an available source failed, fully or in part."""
        return bool(self.errors) or not all(self.sources.values())

    def incomplete(self, interface: str) -> bool:
        """True when some source could not read ``interface`` this cycle.

        For such an interface the store only adds and updates what it was given:
        it marks nothing removed and overwrites no value with "unknown".
        """
        return any(e.interface is None or e.interface == interface for e in self.errors)
