"""The WG_CMD_GET_DEVICE dump, parsed: netlink messages folded into one Interface.

The kernel answers WG_CMD_GET_DEVICE as a *dump*: several messages, each as full as
the socket buffer allows. The device attributes come with the first message (and may
repeat); a peer whose allowed IPs do not fit is cut and continued in the next message,
where it appears again with only its public key and the remaining allowed IPs.
:func:`fold_dump` folds all messages into one Interface by public key, in kernel order,
straight from the bytes (attribute numbers: :mod:`wgsyncd.wire.netlink`).

:func:`coalesce` takes pyroute2 ``wgmsg`` objects instead (tests build dumps with
pyroute2's own encoder): by default it reads each message's raw bytes as well, and
with ``lean=False`` walks pyroute2's decoded attributes, a cross-check of the byte
parser. Works with pyroute2 0.7.2 (Debian 12) and 0.9.x (PyPI).
"""

from __future__ import annotations

import operator
import socket
import struct
from binascii import b2a_base64 as _b64
from collections.abc import Iterable
from typing import Any

from wgsyncd.state import Interface, Peer, Secret, StateError
from wgsyncd.wire.netlink import (
    NLA_TYPE_MASK,
    NLMSG_MIN_TYPE,
    WGALLOWEDIP_A_CIDR_MASK,
    WGALLOWEDIP_A_FAMILY,
    WGALLOWEDIP_A_IPADDR,
    WGDEVICE_A_FWMARK,
    WGDEVICE_A_IFNAME,
    WGDEVICE_A_LISTEN_PORT,
    WGDEVICE_A_PEERS,
    WGDEVICE_A_PRIVATE_KEY,
    WGDEVICE_A_PUBLIC_KEY,
    WGPEER_A_ALLOWEDIPS,
    WGPEER_A_ENDPOINT,
    WGPEER_A_LAST_HANDSHAKE_TIME,
    WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL,
    WGPEER_A_PRESHARED_KEY,
    WGPEER_A_PROTOCOL_VERSION,
    WGPEER_A_PUBLIC_KEY,
    WGPEER_A_RX_BYTES,
    WGPEER_A_TX_BYTES,
    describe,
    nlas,
)
from wgsyncd.wire.netlink_peers import fold_peer, handshake_or_none, peer_for, psk_or_none, scope_name
from wgsyncd.wire.values import (
    KERNEL_PEER_PROVENANCE,
    InterfaceReadError,
    key_from_wire,
    make_interface,
)

_GENL_HEADER = 16 + 4  # nlmsghdr + genlmsghdr
_NLA = struct.Struct("=HH")
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
_S64 = struct.Struct("=q")
_BE16 = struct.Struct(">H")
_DEVICE_KEYS = {
    WGDEVICE_A_IFNAME: "WGDEVICE_A_IFNAME",
    WGDEVICE_A_PRIVATE_KEY: "WGDEVICE_A_PRIVATE_KEY",
    WGDEVICE_A_PUBLIC_KEY: "WGDEVICE_A_PUBLIC_KEY",
}


# Peers are built while the messages are folded (10,000 a read, so no accumulator in
# between): a fresh Peer is editable until the cycle seals it, and the rare continuation
# (a peer cut at a message boundary) only appends to its allowed IPs.


def fold_dump(name: str, messages: Iterable[tuple[Any, int, int, int]]) -> Interface:
    """One Interface from raw dump messages (datagram, offset, length, type), as the socket read them."""
    device: dict[str, Any] = {}
    peers: dict[str, Peer] = {}
    for data, offset, length, typ in messages:
        if typ >= NLMSG_MIN_TYPE:
            _fold_raw(data, offset, length, device, peers)
    return _finish(name, device, peers)


def _finish(name: str, device: dict[str, Any], peers: dict[str, Peer]) -> Interface:
    """The Interface of the folded attributes; a dump for another name is refused."""
    ifname = device.get("WGDEVICE_A_IFNAME")
    if ifname is not None and ifname != name:
        raise InterfaceReadError(f"dump answered for {ifname!r}, not {name!r}")
    try:
        iface = _build_interface(name, device)
    except StateError as exc:
        raise InterfaceReadError(str(exc)) from None
    iface.peers = peers  # already Peers, in kernel order
    return iface


def coalesce(name: str, messages: Iterable[Any], *, lean: bool = True) -> Interface:
    """Fold a multi-message WG_CMD_GET_DEVICE dump of pyroute2 messages into one Interface.

    ``messages`` are the pyroute2 ``wgmsg`` objects a dump returns (control messages
    such as NLMSG_DONE are skipped). pyroute2 decodes nested attributes lazily and
    slowly (about 4 s for 10,000 peers here, 18x that in a small VM), so by default
    the attributes are read straight from each message's raw bytes (``msg.data`` at
    ``msg.offset``), which both pyroute2 versions keep; ``lean=False`` walks pyroute2's
    own decoded attributes instead (used as a cross-check in the tests).
    """
    device: dict[str, Any] = {}
    peers: dict[str, Peer] = {}
    for msg in messages:
        header = msg["header"]
        error = header.get("error")
        if error is not None:
            raise InterfaceReadError(f"netlink error in dump: {describe(error)}")
        if header.get("type", NLMSG_MIN_TYPE) < NLMSG_MIN_TYPE:
            continue  # NOOP / ERROR(ack) / DONE / OVERRUN: no attributes of ours
        raw = getattr(msg, "data", None) if lean else None
        if raw is not None:
            _fold_raw(raw, msg.offset, header["length"], device, peers)
            continue
        for attr in msg.get("attrs") or ():
            key, value = attr[0], attr[1]
            if key == "WGDEVICE_A_PEERS":
                for peer in value:
                    fold_peer(peers, peer, name)
            else:
                device[key] = value
    return _finish(name, device, peers)


# ---- the lean path: attributes from the raw message bytes (uapi/linux/wireguard.h)


def _fold_raw(buf: Any, offset: int, length: int, device: dict[str, Any], peers: dict[str, Peer]) -> None:
    """One message's device attributes and peers, from its bytes."""
    try:
        for typ, a, b in nlas(buf, offset + _GENL_HEADER, offset + length):
            if typ == WGDEVICE_A_PEERS:
                _fold_peers(buf, a, b, peers)
            elif typ == WGDEVICE_A_IFNAME:
                device[_DEVICE_KEYS[typ]] = bytes(buf[a:b]).split(b"\0", 1)[0].decode()
            elif typ in (WGDEVICE_A_PRIVATE_KEY, WGDEVICE_A_PUBLIC_KEY):
                device[_DEVICE_KEYS[typ]] = bytes(buf[a:b])
            elif typ == WGDEVICE_A_LISTEN_PORT:
                device["WGDEVICE_A_LISTEN_PORT"] = _U16.unpack_from(buf, a)[0]
            elif typ == WGDEVICE_A_FWMARK:
                device["WGDEVICE_A_FWMARK"] = _U32.unpack_from(buf, a)[0]
    except (struct.error, ValueError, OSError) as exc:
        raise InterfaceReadError(f"malformed dump message: {exc.__class__.__name__}") from None


def _raw_key(buf: Any, a: int, b: int) -> str:
    """A 32-byte key attribute as base64."""
    if b - a != 32:
        raise InterfaceReadError(f"key attribute of {b - a} bytes in dump")
    return _b64(buf[a:b], newline=False).decode()


# The kernel writes a full peer's first attributes in one order (get_peer() in
# drivers/net/wireguard/netlink.c): public key, preshared key, handshake time, keepalive,
# tx, rx, protocol version. One unpack reads them when the attribute headers say exactly
# that; anything else (a continuation, another kernel's padding) goes attribute by attribute.
_FIXED = struct.Struct("=HH32sHH32sHHqqHHH2xHHQHHQHHI")
_FIXED_HEADERS = operator.itemgetter(0, 1, 3, 4, 6, 7, 10, 11, 13, 14, 16, 17, 19, 20)
_FIXED_EXPECTED = (
    36,
    WGPEER_A_PUBLIC_KEY,
    36,
    WGPEER_A_PRESHARED_KEY,
    20,
    WGPEER_A_LAST_HANDSHAKE_TIME,
    6,
    WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL,
    12,
    WGPEER_A_TX_BYTES,
    12,
    WGPEER_A_RX_BYTES,
    8,
    WGPEER_A_PROTOCOL_VERSION,
)
_ZERO_KEY = bytes(32)
# One allowed IP as get_allowedips() writes it: nest header, then the cidr (u8), family
# (u16) and address attributes; each attribute header read as one u32 (length | type << 16)
# so a layout check is one tuple compare. Any other layout goes attribute by attribute.
_ALLOWED_V4 = struct.Struct("=HHIB3xIH2xI4s")  # a 28-byte nest
_ALLOWED_V6 = struct.Struct("=HHIB3xIH2xI16s")  # a 40-byte nest
_CIDR_HEADER = 5 | WGALLOWEDIP_A_CIDR_MASK << 16
_FAMILY_HEADER = 6 | WGALLOWEDIP_A_FAMILY << 16
_ALLOWED_HEADERS = operator.itemgetter(2, 4, 5, 6)
_ALLOWED_EXPECTED = {
    28: (_CIDR_HEADER, _FAMILY_HEADER, socket.AF_INET, 8 | WGALLOWEDIP_A_IPADDR << 16),
    40: (_CIDR_HEADER, _FAMILY_HEADER, socket.AF_INET6, 20 | WGALLOWEDIP_A_IPADDR << 16),
}
_ALLOWED_LAYOUT = {
    28: (_ALLOWED_V4.unpack_from, socket.AF_INET),
    40: (_ALLOWED_V6.unpack_from, socket.AF_INET6),
}
_CIDR = tuple(f"/{n}" for n in range(256))  # the suffix strings, made once


def _fold_peers(buf: Any, pos: int, end: int, peers: dict[str, Peer]) -> None:
    """Every peer nest of one message; a public key seen before (a continuation) only adds allowed IPs.

    The hot loop of a read (10,000 peers): names are bound locally, a full peer's fixed
    part is one unpack and the Peer is built right here (positionally: Peer's field order
    is checked by tests/unit/wire/test_netlink_dump.py); the rest (endpoint, allowed IPs)
    attribute by attribute.
    """
    fixed_unpack, fixed_headers, nla_unpack = _FIXED.unpack_from, _FIXED_HEADERS, _NLA.unpack_from
    fixed_size, b64, provenance, allowed_ips = _FIXED.size, _b64, KERNEL_PEER_PROVENANCE, _allowed_ips
    while pos + 4 <= end:
        length = nla_unpack(buf, pos)[0]
        if length < 4 or pos + length > end:
            raise InterfaceReadError("malformed netlink attribute in dump")
        start, stop = pos + 4, pos + length
        pos += (length + 3) & ~3
        if stop - start < fixed_size:
            _fold_raw_peer(buf, start, stop, peers)
            continue
        fixed = fixed_unpack(buf, start)
        if fixed_headers(fixed) != _FIXED_EXPECTED:
            _fold_raw_peer(buf, start, stop, peers)
            continue
        public = b64(fixed[2], newline=False).decode()
        allowed: list[str] = []
        endpoint = None
        a = start + fixed_size
        while a + 4 <= stop:
            alen, atyp = nla_unpack(buf, a)
            if alen < 4 or a + alen > stop:
                raise InterfaceReadError("malformed netlink attribute in dump")
            atyp &= NLA_TYPE_MASK
            if atyp == WGPEER_A_ALLOWEDIPS:
                allowed_ips(buf, a + 4, a + alen, allowed)
            elif atyp == WGPEER_A_ENDPOINT:
                endpoint = _raw_endpoint(buf, a + 4, a + alen)
            a += (alen + 3) & ~3
        psk = fixed[5]
        hs = fixed[8]
        prev = peers.get(public)
        peers[public] = Peer(
            public,
            None if psk == _ZERO_KEY else Secret(b64(psk, newline=False).decode()),
            tuple(allowed) if prev is None else prev.allowed_ips + tuple(allowed),
            endpoint,
            fixed[12],
            None if hs == 0 else handshake_or_none(hs),
            fixed[18],
            fixed[15],
            None,
            None,
            None,
            None,
            provenance,
        )


def _fold_raw_peer(buf: Any, start: int, end: int, peers: dict[str, Peer]) -> None:
    """One peer nest attribute by attribute (a continuation, or an unexpected layout)."""
    attrs = nlas(buf, start, end)
    public = next((_raw_key(buf, a, b) for typ, a, b in attrs if typ == WGPEER_A_PUBLIC_KEY), None)
    peer = peer_for(peers, public)
    allowed: list[str] = []
    for typ, a, b in attrs:
        if typ == WGPEER_A_ALLOWEDIPS:
            _allowed_ips(buf, a, b, allowed)
        elif typ == WGPEER_A_PRESHARED_KEY:
            peer.preshared_key = psk_or_none(_raw_key(buf, a, b))
        elif typ == WGPEER_A_ENDPOINT:
            peer.endpoint = _raw_endpoint(buf, a, b)
        elif typ == WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL:
            peer.persistent_keepalive = _U16.unpack_from(buf, a)[0]
        elif typ == WGPEER_A_LAST_HANDSHAKE_TIME:
            peer.latest_handshake = handshake_or_none(
                _S64.unpack_from(buf, a)[0]
            )  # __kernel_timespec: tv_sec first
        elif typ == WGPEER_A_RX_BYTES:
            peer.rx_bytes = _U64.unpack_from(buf, a)[0]
        elif typ == WGPEER_A_TX_BYTES:
            peer.tx_bytes = _U64.unpack_from(buf, a)[0]
    if allowed:
        peer.allowed_ips += tuple(allowed)


def _allowed_ips(buf: Any, pos: int, end: int, out: list[str]) -> None:
    """Every allowed-IP nest in ``buf[pos:end]`` as ``addr/cidr``; the kernel's layout in one unpack."""
    ntop, headers, layouts, expected, cidrs = (
        socket.inet_ntop,
        _ALLOWED_HEADERS,
        _ALLOWED_LAYOUT,
        _ALLOWED_EXPECTED,
        _CIDR,
    )
    append, nla_unpack = out.append, _U16.unpack_from
    while pos + 4 <= end:
        total = nla_unpack(buf, pos)[0]
        layout = layouts.get(total)
        if layout is not None and pos + total <= end:
            v = layout[0](buf, pos)
            if headers(v) == expected[total]:
                append(ntop(layout[1], v[7]) + cidrs[v[3]])
                pos += total
                continue
        if total < 4 or pos + total > end:
            raise InterfaceReadError("malformed netlink attribute in dump")
        append(_raw_allowed_ip(buf, pos + 4, pos + total))
        pos += (total + 3) & ~3


def _raw_allowed_ip(buf: Any, start: int, end: int) -> str:
    """``addr/cidr`` from an allowed-IP nest (family, address, cidr), inet_ntop like wg."""
    family = cidr = None
    addr = b""
    for typ, a, b in nlas(buf, start, end):
        if typ == WGALLOWEDIP_A_FAMILY:
            family = _U16.unpack_from(buf, a)[0]
        elif typ == WGALLOWEDIP_A_IPADDR:
            addr = bytes(buf[a:b])
        elif typ == WGALLOWEDIP_A_CIDR_MASK:
            cidr = buf[a]
    if family not in (socket.AF_INET, socket.AF_INET6) or cidr is None:
        raise InterfaceReadError("allowed IP without family/cidr in dump")
    return f"{socket.inet_ntop(family, addr)}/{cidr}"


def _raw_endpoint(buf: Any, a: int, b: int) -> str | None:
    """sockaddr_in / sockaddr_in6 -> wg's ``addr:port`` / ``[addr%scope]:port``."""
    family = _U16.unpack_from(buf, a)[0]
    port = _BE16.unpack_from(buf, a + 2)[0]
    if family == socket.AF_INET and b - a >= 8:
        return f"{socket.inet_ntop(socket.AF_INET, bytes(buf[a + 4 : a + 8]))}:{port}"
    if family == socket.AF_INET6 and b - a >= 28:
        addr = socket.inet_ntop(socket.AF_INET6, bytes(buf[a + 8 : a + 24]))
        scope_id = _U32.unpack_from(buf, a + 24)[0]
        if scope_id:
            addr = f"{addr}%{scope_name(scope_id)}"
        return f"[{addr}]:{port}"
    raise InterfaceReadError(f"endpoint of family {family} in dump")


def _build_interface(name: str, device: dict[str, Any]) -> Interface:
    """The interface-level fields; keys are only present when the device has an identity."""
    private = device.get("WGDEVICE_A_PRIVATE_KEY")
    public = device.get("WGDEVICE_A_PUBLIC_KEY")
    return make_interface(
        name,
        key_from_wire(private, f"{name}: private key") if private is not None else None,
        key_from_wire(public, f"{name}: public key") if public is not None else None,
        int(device.get("WGDEVICE_A_LISTEN_PORT") or 0),
        int(device.get("WGDEVICE_A_FWMARK") or 0),
        "kernel",
    )
