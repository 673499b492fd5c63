"""wgsyncd.wire.netlink_dump's fast path: kernel-layout bytes give exactly make_peer's Peer.

The fold builds each Peer positionally and reads allowed IPs with one unpack per
family, so these tests write messages byte for byte in the kernel's own layout
(get_peer()/get_allowedips() in drivers/net/wireguard/netlink.c) and compare the
result with the Peer that values.make_peer builds from the same values.
"""

from __future__ import annotations

import base64
import socket
import struct

import pytest

from wgsyncd.wire import netlink as nl
from wgsyncd.wire.netlink_dump import fold_dump
from wgsyncd.wire.values import InterfaceReadError, make_peer

PUB, PSK = bytes(range(32)), bytes(range(1, 33))
NESTED = 0x8000


def allowed_nest(family: int, addr: str, cidr: int) -> bytes:
    """One allowed IP in the kernel's order: cidr, family, address."""
    body = (
        nl.nla(nl.WGALLOWEDIP_A_CIDR_MASK, bytes([cidr]))
        + nl.nla(nl.WGALLOWEDIP_A_FAMILY, struct.pack("=H", family))
        + nl.nla(nl.WGALLOWEDIP_A_IPADDR, socket.inet_pton(family, addr))
    )
    return nl.nla(NESTED, body)


def peer_nest(allowed: bytes, full: bool = True, hs: int = 1700000000) -> bytes:
    """A peer as get_peer() writes it (full), or a continuation: public key and allowed IPs only."""
    body = nl.nla(nl.WGPEER_A_PUBLIC_KEY, PUB)
    if full:
        body += (
            nl.nla(nl.WGPEER_A_PRESHARED_KEY, PSK)
            + nl.nla(nl.WGPEER_A_LAST_HANDSHAKE_TIME, struct.pack("=qq", hs, 5))
            + nl.nla(nl.WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL, struct.pack("=H", 25))
            + nl.nla(nl.WGPEER_A_TX_BYTES, struct.pack("=Q", 7))
            + nl.nla(nl.WGPEER_A_RX_BYTES, struct.pack("=Q", 9))
            + nl.nla(nl.WGPEER_A_PROTOCOL_VERSION, struct.pack("=I", 1))
        )
        sockaddr = struct.pack("=H", socket.AF_INET6) + struct.pack(">H", 51820) + bytes(4)
        body += nl.nla(
            nl.WGPEER_A_ENDPOINT, sockaddr + socket.inet_pton(socket.AF_INET6, "2001:db8::1") + bytes(4)
        )
    return nl.nla(NESTED, body + nl.nla(NESTED | nl.WGPEER_A_ALLOWEDIPS, allowed))


def message(*peers: bytes) -> tuple[bytes, int, int, int]:
    """One dump message (as NetlinkSocket.messages hands it over) holding ``peers``."""
    payload = nl.GENL_HEADER.pack(0, 1, 0) + nl.nla(nl.WGDEVICE_A_IFNAME, b"wgt\0")
    payload += nl.nla(NESTED | nl.WGDEVICE_A_PEERS, b"".join(peers))
    data = nl.NLMSG_HEADER.pack(16 + len(payload), 0x20, nl.NLM_F_MULTI, 1, 0) + payload
    return data, 0, len(data), 0x20


V4 = allowed_nest(socket.AF_INET, "10.0.0.1", 32)
V6 = allowed_nest(socket.AF_INET6, "2001:db8:a::", 64)
EXPECTED = make_peer(
    base64.b64encode(PUB).decode(),
    base64.b64encode(PSK).decode(),
    ("10.0.0.1/32", "2001:db8:a::/64"),
    "[2001:db8::1]:51820",
    25,
    1700000000,
    9,
    7,
)


def test_a_kernel_layout_peer_is_make_peers_peer_field_for_field() -> None:
    peer = fold_dump("wgt", [message(peer_nest(V4 + V6))]).peers[EXPECTED.public_key]
    assert peer == EXPECTED
    assert peer.provenance is EXPECTED.provenance  # the shared kernel provenance, not a copy


def test_a_peer_cut_at_a_message_boundary_keeps_its_values_and_gains_the_rest() -> None:
    iface = fold_dump("wgt", [message(peer_nest(V4)), message(peer_nest(V6, full=False))])
    assert list(iface.peers.values()) == [EXPECTED]


def test_an_allowed_ip_in_another_attribute_order_reads_the_same() -> None:
    reordered = nl.nla(
        NESTED,
        nl.nla(nl.WGALLOWEDIP_A_FAMILY, struct.pack("=H", socket.AF_INET))
        + nl.nla(nl.WGALLOWEDIP_A_IPADDR, socket.inet_pton(socket.AF_INET, "10.0.0.1"))
        + nl.nla(nl.WGALLOWEDIP_A_CIDR_MASK, bytes([32])),
    )
    assert fold_dump("wgt", [message(peer_nest(reordered + V6))]).peers[EXPECTED.public_key] == EXPECTED


def test_an_allowed_ip_of_an_unknown_family_is_a_named_error() -> None:
    bogus = bytearray(V4)
    bogus[16:18] = struct.pack("=H", 99)  # the family value: AF 99 has no inet_ntop spelling
    with pytest.raises(InterfaceReadError, match="allowed IP"):
        fold_dump("wgt", [message(peer_nest(bytes(bogus)))])


def test_an_impossible_handshake_time_fails_the_interface_not_the_reader() -> None:
    with pytest.raises(InterfaceReadError, match="handshake"):
        fold_dump("wgt", [message(peer_nest(V4, hs=-5))])
