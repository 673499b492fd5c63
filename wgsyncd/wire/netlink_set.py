"""WG_CMD_SET_DEVICE messages, attribute by attribute, as pyroute2 ``wgmsg`` lists.

pyroute2's ``WireGuard.set()`` is NOT used: its peer flags depend on the version
(Debian 12's 0.7.2 numbers WGPEER_F_* from 0 and always sends 2, which the kernel
reads as REPLACE_ALLOWEDIPS, and its "remove" sends WGDEVICE_F_REPLACE_PEERS = 1,
REMOVE_ME only by coincidence; 0.9.x sends the real bits, and 0 unless asked), and it
carries one peer per message, unable to continue a peer's allowed IPs over several.
Sending the kernel's own bit values (:mod:`wgsyncd.wire.netlink`) makes every version
write the same bytes. Which peers go in what order is restore's business
(:mod:`wgsyncd.restore.netlink`); this module only encodes. The lists hold key values:
send them, never log them.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any

from wgsyncd.canonical import ZERO_KEY_B64
from wgsyncd.state import Interface, Peer
from wgsyncd.wire.netlink import WGPEER_F_REMOVE_ME, WGPEER_F_REPLACE_ALLOWEDIPS, WGPEER_F_UPDATE_ONLY

# Bytes of attributes per message: far below the socket's send buffer and the kernel's
# genl limit, big enough that 10,000 small peers take a few hundred round trips.
NETLINK_MESSAGE_BUDGET = 16384
# Rough encoded sizes (nla header + payload, padded) used to fill messages.
_NLA_PEER_BASE = 4 + 36 + 8  # nest, public key, flags
_NLA_PEER_FIELDS = 36 + 32 + 8  # psk, endpoint (v6), keepalive
_NLA_ALLOWED_V4, _NLA_ALLOWED_V6 = 28, 40
_NLA_DEVICE = 4 + 20 + 36 + 8 + 8 + 4  # header slack, ifname, private key, port, fwmark, peers nest


class EndpointScopeUnknown(ValueError):
    """An IPv6 endpoint's ``%scope`` names no interface on this machine."""


def endpoint_value(endpoint: str) -> dict[str, Any]:
    """``ip:port`` / ``[v6%scope]:port`` as pyroute2's endpoint nla wants it.

    pyroute2 packs sin6_scope_id big-endian (both versions) while the kernel reads
    host order, so the scope's interface index is byte-swapped here to arrive right.
    """
    host, _, port = endpoint.rpartition(":")
    host = host.strip("[]")
    addr, _, scope = host.partition("%")
    value: dict[str, Any] = {"addr": addr, "port": int(port)}
    if ":" in addr:
        index = 0
        if scope:
            try:
                index = int(scope) if scope.isdigit() else socket.if_nametoindex(scope)
            except OSError:
                raise EndpointScopeUnknown(scope) from None
        value["flowinfo"] = 0
        value["scope_id"] = int.from_bytes(index.to_bytes(4, sys.byteorder), "big")
    return value


def allowed_ip_nest(cidr: str) -> tuple[dict[str, Any], int]:
    """One WGPEER_A_ALLOWEDIPS entry (family, address, mask) and its encoded size."""
    net = ipaddress.ip_network(cidr, strict=False)
    family = socket.AF_INET6 if net.version == 6 else socket.AF_INET
    nest = {
        "attrs": [
            ["WGALLOWEDIP_A_FAMILY", family],
            ["WGALLOWEDIP_A_IPADDR", net.network_address.packed],
            ["WGALLOWEDIP_A_CIDR_MASK", net.prefixlen],
        ]
    }
    return nest, _NLA_ALLOWED_V6 if net.version == 6 else _NLA_ALLOWED_V4


def device_attrs(desired: Interface, fields: set[str] | tuple[str, ...]) -> list[list[Any]]:
    """The device-level attributes for the changed ``fields`` (private key, port, fwmark)."""
    device: list[list[Any]] = []
    if "private_key" in fields and desired.private_key:
        device.append(["WGDEVICE_A_PRIVATE_KEY", desired.private_key.reveal()])
    if "listen_port" in fields:
        device.append(["WGDEVICE_A_LISTEN_PORT", desired.listen_port or 0])
    if "fwmark" in fields:
        device.append(["WGDEVICE_A_FWMARK", desired.fwmark or 0])
    return device


class MessageFiller:
    """Packs device attributes and peer nests into messages of at most ``budget`` bytes."""

    def __init__(self, name: str, device_attrs: list[list[Any]], budget: int) -> None:
        self.name = name
        self.budget = budget
        self.messages: list[list[list[Any]]] = []
        self._peers: list[dict[str, Any]] = []
        self._device = device_attrs
        self._size = _NLA_DEVICE

    def room(self) -> int:
        """Bytes still free in the message being filled."""
        return self.budget - self._size

    def add(self, peer_attrs: list[list[Any]], size: int) -> None:
        """Add one peer nest; starts a new message first when it would not fit."""
        if size > self.room() and self._peers:
            self.flush()
        self._peers.append({"attrs": peer_attrs})
        self._size += size

    def flush(self) -> None:
        """Close the message being filled (the first one carries the device attributes)."""
        if not self._peers and not self._device:
            return
        attrs: list[list[Any]] = [["WGDEVICE_A_IFNAME", self.name], *self._device]
        if self._peers:
            attrs.append(["WGDEVICE_A_PEERS", self._peers])
        self.messages.append(attrs)
        self._peers, self._device, self._size = [], [], _NLA_DEVICE

    def remove_peer(self, public_key: str) -> None:
        """A peer removal: its public key and REMOVE_ME."""
        self.add(
            [["WGPEER_A_PUBLIC_KEY", public_key], ["WGPEER_A_FLAGS", WGPEER_F_REMOVE_ME]],
            _NLA_PEER_BASE,
        )

    def write_peer(self, peer: Peer) -> None:
        """One added or updated peer with every field, its allowed IPs over as many messages as they need.

        A missing preshared key is the all-zero key (which clears it); the allowed-IP
        list carries REPLACE_ALLOWEDIPS, and a list too long for one message continues
        in the next with UPDATE_ONLY and no REPLACE, as `wg` does.
        """
        attrs: list[list[Any]] = [
            ["WGPEER_A_PUBLIC_KEY", peer.public_key],
            ["WGPEER_A_FLAGS", WGPEER_F_REPLACE_ALLOWEDIPS],
            ["WGPEER_A_PRESHARED_KEY", peer.preshared_key.reveal() if peer.preshared_key else ZERO_KEY_B64],
            ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", peer.persistent_keepalive or 0],
        ]
        if peer.endpoint:
            attrs.append(["WGPEER_A_ENDPOINT", endpoint_value(peer.endpoint)])
        nests = [allowed_ip_nest(ip) for ip in peer.allowed_ips or ()]
        size = _NLA_PEER_BASE + _NLA_PEER_FIELDS
        if size + sum(s for _n, s in nests) > self.room():
            self.flush()
        chunk: list[dict[str, Any]] = []
        for nest, nest_size in nests:
            if chunk and size + nest_size > self.room():
                self.add([*attrs, ["WGPEER_A_ALLOWEDIPS", chunk]], size)
                self.flush()
                # the rest of the list: append to the peer just written, never create one
                attrs = [["WGPEER_A_PUBLIC_KEY", peer.public_key], ["WGPEER_A_FLAGS", WGPEER_F_UPDATE_ONLY]]
                chunk, size = [], _NLA_PEER_BASE
            chunk.append(nest)
            size += nest_size
        self.add([*attrs, ["WGPEER_A_ALLOWEDIPS", chunk]] if chunk else attrs, size)
