"""A WireGuard interface's values as ``wg`` prints them, from whatever a wire hands over.

Every way of reading a running interface (netlink, the UAPI control socket, ``wg show
dump`` text) produces the same :class:`~wgsyncd.state.Interface` through these
builders: endpoints and prefixes in inet_ntop's spelling, keys validated as base64,
"none" as None or 0, kernel provenance. So the backends agree with each other byte for
byte, and restore reads back exactly what the daemon syncs. Nothing here does I/O.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from wgsyncd.canonical import ZERO_KEY_B64
from wgsyncd.state import (
    WIRE_PEER_FIELDS,
    Interface,
    Peer,
    Secret,
    Source,
    StateError,
    parse_key,
    public_key_from_private,
)
from wgsyncd.valuepool import one, one_secret, one_tuple

# the fields a kernel read always knows, even when the value is "none" (None / 0)
INTERFACE_FIELDS = ("private_key", "public_key", "listen_port", "fwmark", "implementation")
PEER_FIELDS = WIRE_PEER_FIELDS
_IFACE_PROVENANCE = dict.fromkeys(INTERFACE_FIELDS, Source.KERNEL)
_PEER_PROVENANCE = dict.fromkeys(PEER_FIELDS, Source.KERNEL)
# the one provenance dict of every kernel-read Peer (shared, never changed: see state.shared)
KERNEL_PEER_PROVENANCE = _PEER_PROVENANCE


class InterfaceReadError(Exception):
    """One interface could not be read completely; the message never holds a key value."""


# the last second of year 9999: the latest time a datetime (and PostgreSQL's column) can hold
MAX_HANDSHAKE_SEC = 253402300799


def handshake_time(seconds: int) -> datetime | None:
    """0 means "never" (None); otherwise an aware UTC datetime with wg's seconds precision.

    A negative or absurd value (a broken daemon, a fuzzed reply) is a StateError, not a
    crash in datetime: the reader reports the interface as unreadable.
    """
    if seconds == 0:
        return None
    if not 0 < seconds <= MAX_HANDSHAKE_SEC:
        raise StateError("latest handshake time out of range")
    return one(datetime.fromtimestamp(seconds, tz=UTC))  # shared with wgrest's copy (valuepool)


def key_from_wire(value: bytes | str, where: str) -> str:
    """A base64 key from what a backend hands over: base64 text/bytes, raw 32 bytes, or hex.

    pyroute2 gives base64 *bytes*; UAPI gives 64 hex characters. Validated with
    :func:`state.parse_key` so a malformed key is an error naming ``where``, never its value.
    """
    if isinstance(value, bytes):
        value = base64.b64encode(value).decode() if len(value) == 32 else value.decode("ascii", "replace")
    elif len(value) == 64:
        try:  # 64 hex digits are exactly 32 bytes: valid by construction
            return base64.b64encode(bytes.fromhex(value)).decode()
        except ValueError:
            raise StateError(f"{where}: not a hex WireGuard key") from None
    return parse_key(value, where)


def make_interface(
    name: str,
    private_key: str | None,
    public_key: str | None,
    listen_port: int,
    fwmark: int,
    implementation: str | None,
) -> Interface:
    """An Interface with kernel provenance; derives the public key when only the private one is known.

    wireguard-go's UAPI does not report the public key; ``wg`` derives it the same way.
    """
    secret = Secret(private_key) if private_key else None
    if secret is not None and public_key is None:
        public_key = public_key_from_private(secret)
    return Interface(
        name=name,
        private_key=secret,
        public_key=public_key,
        listen_port=listen_port,
        fwmark=fwmark,
        implementation=implementation,
        provenance=dict(_IFACE_PROVENANCE),
    )


def make_peer(
    public_key: str,
    preshared_key: str | None,
    allowed_ips: tuple[str, ...],
    endpoint: str | None,
    keepalive: int,
    handshake_sec: int,
    rx_bytes: int,
    tx_bytes: int,
) -> Peer:
    """A Peer with kernel provenance; an all-zero preshared key means "none"."""
    no_psk = preshared_key is None or preshared_key == ZERO_KEY_B64
    psk = None if no_psk else one_secret(preshared_key)  # type: ignore[arg-type]
    return Peer(
        public_key=one(public_key),  # one str with the other sources (valuepool)
        preshared_key=psk,
        allowed_ips=one_tuple(allowed_ips),
        endpoint=None if endpoint is None else one(endpoint),
        persistent_keepalive=keepalive,
        latest_handshake=handshake_time(handshake_sec),
        rx_bytes=rx_bytes,
        tx_bytes=tx_bytes,
        provenance=_PEER_PROVENANCE,  # shared, never changed (see state.shared)
    )


class RawPeer:
    """One peer's wire values while they are being collected (netlink messages, UAPI lines).

    Shared by both readers: a peer can arrive in pieces (netlink splits allowed IPs
    across messages), so values accumulate here and become a Peer once, at the end.
    """

    __slots__ = ("allowed", "endpoint", "hs", "keepalive", "psk", "public", "rx", "tx")

    def __init__(self, public: str) -> None:
        self.public = public
        self.psk: str | None = None
        self.endpoint: str | None = None
        self.hs = 0
        self.rx = 0
        self.tx = 0
        self.keepalive = 0
        self.allowed: list[str] = []

    def build(self) -> Peer:
        """The finished Peer, with kernel provenance."""
        return make_peer(
            self.public,
            self.psk,
            tuple(self.allowed),
            self.endpoint,
            self.keepalive,
            self.hs,
            self.rx,
            self.tx,
        )
