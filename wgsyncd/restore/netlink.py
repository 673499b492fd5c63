"""Kernel apply through netlink: WG_CMD_SET_DEVICE messages built by hand, then a read-back.

The WireGuard genl messages are built here, attribute by attribute, with pyroute2's
own ``wgmsg`` classes, and sent on its ``WireGuard`` socket; ``WireGuard.set()`` is
NOT used. Its peer flags depend on the pyroute2 version: Debian 12's 0.7.2 numbers
WGPEER_F_* from 0 and always sends 2, which the kernel reads as REPLACE_ALLOWEDIPS
(and its "remove" sends WGDEVICE_F_REPLACE_PEERS = 1, REMOVE_ME only by
coincidence); 0.9.x sends the real bits, and 0 (append) unless asked. set() also
carries one peer per message and cannot continue a peer's allowed IPs over several
messages. Sending the kernel's bit values ourselves makes both versions (and any in
between) write the same bytes: every written peer gets its full allowed-IP list
with REPLACE_ALLOWEDIPS, removals carry REMOVE_ME, and the result is read back.
pyroute2 is imported where it is used (a host with ``wg`` does not need it).
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any

from wgsyncd.canonical import ZERO_KEY_B64
from wgsyncd.restore.changes import InterfaceChanges, diff_interface, write_order
from wgsyncd.restore.errors import RestoreError
from wgsyncd.restore.values import check_interface
from wgsyncd.state import Interface, Peer

# uapi/linux/wireguard.h
WG_CMD_SET_DEVICE = 1
WG_GENL_VERSION = 1
WGPEER_F_REMOVE_ME = 1 << 0
WGPEER_F_REPLACE_ALLOWEDIPS = 1 << 1
WGPEER_F_UPDATE_ONLY = 1 << 2
# Bytes of attributes per message: far below the socket's send buffer and the kernel's
# genl limit, big enough that 10,000 small peers take a few hundred round trips.
NETLINK_MESSAGE_BUDGET = 16384
NETLINK_TIMEOUT = 120.0
# Rough encoded sizes (nla header + payload, padded) used to fill messages.
_NLA_PEER_BASE = 4 + 36 + 8  # nest, public key, flags
_NLA_PEER_FIELDS = 36 + 32 + 8  # psk, endpoint (v6), keepalive
_NLA_ALLOWED_V4, _NLA_ALLOWED_V6 = 28, 40
_NLA_DEVICE = 4 + 20 + 36 + 8 + 8 + 4  # header slack, ifname, private key, port, fwmark, peers nest


def _endpoint_value(endpoint: str, where: str) -> dict[str, Any]:
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
                raise RestoreError(f"{where}: endpoint scope {scope!r} is not an interface here") from None
        value["flowinfo"] = 0
        value["scope_id"] = int.from_bytes(index.to_bytes(4, sys.byteorder), "big")
    return value


def _allowed_ip_nest(cidr: str) -> tuple[dict[str, Any], int]:
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


class _MessageFiller:
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


def netlink_messages(
    desired: Interface, changes: InterfaceChanges, where: str, budget: int = NETLINK_MESSAGE_BUDGET
) -> list[list[list[Any]]]:
    """The WG_CMD_SET_DEVICE attribute lists for ``changes``, in sending order.

    Removals first (their allowed IPs are freed before others claim them), then
    updates, then additions, in the version's order. A written peer carries every
    field the version knows (a missing preshared key as the all-zero key, which
    clears it) and its full allowed-IP list with REPLACE_ALLOWEDIPS; a list too long
    for one message continues in the next with UPDATE_ONLY and no REPLACE, as `wg`
    does. Returns pyroute2 ``wgmsg`` attribute lists holding key values: send, never log.
    """
    check_interface(desired, where)
    device: list[list[Any]] = []
    if "private_key" in changes.device and desired.private_key:
        device.append(["WGDEVICE_A_PRIVATE_KEY", desired.private_key.reveal()])
    if "listen_port" in changes.device:
        device.append(["WGDEVICE_A_LISTEN_PORT", desired.listen_port or 0])
    if "fwmark" in changes.device:
        device.append(["WGDEVICE_A_FWMARK", desired.fwmark or 0])
    filler = _MessageFiller(desired.name, device, budget)
    for ch in write_order(changes):
        if ch.action == "remove":
            filler.add(
                [["WGPEER_A_PUBLIC_KEY", ch.public_key], ["WGPEER_A_FLAGS", WGPEER_F_REMOVE_ME]],
                _NLA_PEER_BASE,
            )
            continue
        _add_peer(filler, desired.peers[ch.public_key], f"{where}: peer {ch.public_key}")
    filler.flush()
    return filler.messages


def _add_peer(filler: _MessageFiller, peer: Peer, where: str) -> None:
    """One added or updated peer, its allowed IPs spread over as many messages as they need."""
    attrs: list[list[Any]] = [
        ["WGPEER_A_PUBLIC_KEY", peer.public_key],
        ["WGPEER_A_FLAGS", WGPEER_F_REPLACE_ALLOWEDIPS],
        ["WGPEER_A_PRESHARED_KEY", peer.preshared_key.reveal() if peer.preshared_key else ZERO_KEY_B64],
        ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", peer.persistent_keepalive or 0],
    ]
    if peer.endpoint:
        attrs.append(["WGPEER_A_ENDPOINT", _endpoint_value(peer.endpoint, where)])
    nests = [_allowed_ip_nest(ip) for ip in peer.allowed_ips or ()]
    size = _NLA_PEER_BASE + _NLA_PEER_FIELDS
    if size + sum(s for _n, s in nests) > filler.room():
        filler.flush()
    chunk: list[dict[str, Any]] = []
    for nest, nest_size in nests:
        if chunk and size + nest_size > filler.room():
            filler.add([*attrs, ["WGPEER_A_ALLOWEDIPS", chunk]], size)
            filler.flush()
            # the rest of the list: append to the peer just written, never create one
            attrs = [["WGPEER_A_PUBLIC_KEY", peer.public_key], ["WGPEER_A_FLAGS", WGPEER_F_UPDATE_ONLY]]
            chunk, size = [], _NLA_PEER_BASE
        chunk.append(nest)
        size += nest_size
    filler.add([*attrs, ["WGPEER_A_ALLOWEDIPS", chunk]] if chunk else attrs, size)


def netlink_read(name: str, where: str) -> Interface:
    """The kernel interface as the netlink reader sees it (the same code the daemon syncs with)."""
    from wgsyncd.sources import netlink

    try:
        return netlink.read_interface(name, NETLINK_TIMEOUT)
    except netlink.FamilyMissing:
        raise RestoreError(f"{where}: the WireGuard kernel module is not loaded (no genl family)") from None


def _netlink_send(name: str, messages: list[list[list[Any]]], where: str) -> None:
    """Send each message with NLM_F_ACK and wait for its answer; the first error stops.

    The kernel applies each message whole, but not the series: an error after the
    first message leaves the interface partly changed, which the message says (a
    second restore --apply finishes the job, it only writes what still differs).
    """
    from wgsyncd.sources.kernel import InterfaceReadError
    from wgsyncd.sources.netlink import bounded, describe

    def send() -> None:
        from pyroute2 import WireGuard
        from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
        from pyroute2.netlink.generic.wireguard import wgmsg

        wg = WireGuard()
        try:
            for index, attrs in enumerate(messages):
                msg = wgmsg()
                msg["cmd"] = WG_CMD_SET_DEVICE
                msg["version"] = WG_GENL_VERSION
                msg["attrs"] = attrs
                try:
                    wg.nlm_request(msg, msg_type=wg.prid, msg_flags=NLM_F_REQUEST | NLM_F_ACK)
                except Exception as exc:
                    total = len(messages)
                    done = "nothing was changed" if index == 0 else f"{index} of {total} applied"
                    raise RestoreError(
                        f"{where}: netlink refused message {index + 1} of {total} ({describe(exc)}); "
                        f"{done}, run restore --apply again to finish"
                    ) from None
        finally:
            wg.close()

    try:
        bounded(send, NETLINK_TIMEOUT, f"{name} netlink set")
    except RestoreError:
        raise
    except InterfaceReadError as exc:  # the deadline passed: says which step and how long
        raise RestoreError(f"{where}: {exc}; the interface may be partly changed") from None
    except Exception as exc:  # the socket itself (no module, no permission)
        raise RestoreError(f"{where}: netlink: {describe(exc)}") from None


def netlink_apply(desired: Interface, changes: InterfaceChanges, where: str) -> None:
    """Write ``changes`` through netlink, then read the interface back: it must run the version.

    The read-back catches what a silent kernel or library quirk would hide (a peer
    not removed, allowed IPs appended instead of replaced): such a restore fails
    naming the peers and fields, never a key value.
    """
    _netlink_send(desired.name, netlink_messages(desired, changes, where), where)
    left = diff_interface(netlink_read(desired.name, where), desired, "netlink")
    if not left.empty:
        shown = [f"{p.public_key} {p.action} {','.join(p.fields)}".strip() for p in left.peers[:3]]
        raise RestoreError(
            f"{where}: after the netlink write the interface still differs: {left.summary()} "
            f"(e.g. {'; '.join(shown) or 'device ' + ','.join(left.device)})"
        )
