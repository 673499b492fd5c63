"""A WireGuard interface's values as ``wg`` prints them, from whatever a wire hands over.

Every way of reading a running interface (netlink, the UAPI control socket, ``wg show
dump`` text) produces the same :class:`~wgsyncd.state.Interface` through these
builders: endpoints and prefixes in inet_ntop's spelling, keys validated as base64,
"none" as None or 0, kernel provenance. So the backends agree with each other byte for
byte, and restore reads back exactly what the daemon syncs. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import socket
from datetime import UTC, datetime

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

ZERO_KEY = base64.b64encode(bytes(32)).decode()

# the fields a kernel read always knows, even when the value is "none" (None / 0)
INTERFACE_FIELDS = ("private_key", "public_key", "listen_port", "fwmark", "implementation")
PEER_FIELDS = WIRE_PEER_FIELDS
_IFACE_PROVENANCE = dict.fromkeys(INTERFACE_FIELDS, Source.KERNEL)
_PEER_PROVENANCE = dict.fromkeys(PEER_FIELDS, Source.KERNEL)


class InterfaceReadError(Exception):
    """One interface could not be read completely; the message never holds a key value."""


def format_endpoint(addr: str, port: int, scope: str | None = None) -> str:
    """``1.2.3.4:51820`` or ``[fd00::1]:51820``, as ``wg show dump`` prints it.

    ``wg`` uses getnameinfo(NI_NUMERICHOST), i.e. inet_ntop's canonical form; going
    through inet_pton/inet_ntop here makes every backend print the same text.
    """
    if ":" in addr:
        text = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, addr))
        if scope:
            text = f"{text}%{scope}"
        return f"[{text}]:{port}"
    return f"{socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, addr))}:{port}"


def parse_endpoint_text(text: str) -> str:
    """Normalise an ``addr:port`` / ``[addr]:port`` string to wg's spelling, or raise ValueError."""
    if text.startswith("["):
        host, sep, port = text[1:].rpartition("]:")
        if not sep:
            raise ValueError("endpoint without port")
        host, _, scope = host.partition("%")
        return _format_checked(host, port_number(port), scope or None)
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError("endpoint without port")
    return _format_checked(host, port_number(port))


def _format_checked(host: str, port: int, scope: str | None = None) -> str:
    """format_endpoint on text from a daemon: inet_pton's OSError becomes the ValueError readers catch."""
    try:
        return format_endpoint(host, port, scope)
    except OSError:
        raise ValueError("endpoint address is not an IP address") from None


def port_number(text: str) -> int:
    """A UDP port number 0-65535 from text (digits only), or ValueError."""
    if not text.isdigit():
        raise ValueError("port is not a number")
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("port out of range")
    return value


def normalise_prefix(text: str) -> str:
    """``addr/cidr`` as inet_ntop prints it (``wg`` reparses userspace output the same way)."""
    addr, sep, cidr = text.partition("/")
    if not sep:
        raise ValueError("allowed IP without /cidr")
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    if not cidr.isdigit():
        raise ValueError("cidr is not a number")
    bits = int(cidr)
    if not 0 <= bits <= (128 if family == socket.AF_INET6 else 32):
        raise ValueError("cidr out of range")
    try:
        packed = socket.inet_pton(family, addr)
    except OSError:  # inet_pton's error for a bad address is an OSError, not a ValueError
        raise ValueError("allowed IP is not an IP address") from None
    return f"{socket.inet_ntop(family, packed)}/{bits}"


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
    return datetime.fromtimestamp(seconds, tz=UTC)


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
    psk = None if preshared_key is None or preshared_key == ZERO_KEY else Secret(preshared_key)
    return Peer(
        public_key=public_key,
        preshared_key=psk,
        allowed_ips=allowed_ips,
        endpoint=endpoint,
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
