"""Peers while a netlink dump is folded: the helpers both parsers share, and the pyroute2 path.

:mod:`wgsyncd.wire.netlink_dump` builds Peers straight from the bytes; the rare
continuation (a peer cut at a message boundary) and pyroute2's decoded attributes
(``coalesce(lean=False)``, a cross-check in the tests) edit a Peer found or started
here, before the cycle seals it.
"""

from __future__ import annotations

import socket
import struct
import sys
from typing import Any

from wgsyncd.canonical import ZERO_KEY_B64, format_endpoint
from wgsyncd.state import Peer, Secret, StateError
from wgsyncd.wire.values import KERNEL_PEER_PROVENANCE, InterfaceReadError, handshake_time, key_from_wire


def peer_for(peers: dict[str, Peer], public: str | None) -> Peer:
    """The Peer of ``public``: the one a previous message started, or a new one with nothing known."""
    if public is None:
        raise InterfaceReadError("peer without public key in dump")
    peer = peers.get(public)
    if peer is None:
        peer = peers[public] = Peer(public, allowed_ips=(), persistent_keepalive=0, rx_bytes=0, tx_bytes=0,
                                    provenance=KERNEL_PEER_PROVENANCE)  # fmt: skip
    return peer


def psk_or_none(text: str | None) -> Secret | None:
    """A preshared key as the kernel reports it: all zero means none."""
    return None if text is None or text == ZERO_KEY_B64 else Secret(text)


def handshake_or_none(seconds: int) -> Any:
    """The handshake time; an impossible one makes the dump unreadable (InterfaceReadError)."""
    if seconds == 0:
        return None
    try:
        return handshake_time(seconds)
    except StateError as exc:
        raise InterfaceReadError(str(exc)) from None


def scope_name(index: int) -> str:
    """An IPv6 scope id as getnameinfo prints it: the interface name, else the number."""
    try:
        return socket.if_indextoname(index)
    except OSError:
        return str(index)


def fold_peer(peers: dict[str, Peer], peer_msg: Any, name: str) -> None:
    """Merge one peer nest into its Peer; a repeated public key only adds allowed IPs."""
    attrs = peer_msg["attrs"]
    key = next((a[1] for a in attrs if a[0] == "WGPEER_A_PUBLIC_KEY"), None)
    peer = peer_for(peers, None if key is None else key_from_wire(key, f"{name}: peer public key"))
    for attr in attrs:
        key, value = attr[0], attr[1]
        if key == "WGPEER_A_ALLOWEDIPS":
            peer.allowed_ips += tuple(_allowed_ip(ip) for ip in value)
        elif key == "WGPEER_A_ENDPOINT":
            peer.endpoint = _endpoint(value)
        elif key == "WGPEER_A_PRESHARED_KEY":
            peer.preshared_key = psk_or_none(key_from_wire(value, f"{name}: peer preshared key"))
        elif key == "WGPEER_A_LAST_HANDSHAKE_TIME":
            peer.latest_handshake = handshake_or_none(int(value["tv_sec"]))
        elif key == "WGPEER_A_RX_BYTES":
            peer.rx_bytes = int(value)
        elif key == "WGPEER_A_TX_BYTES":
            peer.tx_bytes = int(value)
        elif key == "WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL":
            peer.persistent_keepalive = int(value)


def _allowed_ip(nest: Any) -> str:
    """``addr/cidr``: pyroute2 computes ``addr`` with inet_ntop on decode (both versions)."""
    addr = nest.get("addr")
    if addr is None:
        raise InterfaceReadError("allowed IP without family/address in dump")
    return addr


def _endpoint(value: Any) -> str:
    """wg's spelling of a decoded sockaddr; a v6 scope id becomes ``%ifname`` like getnameinfo."""
    scope = None
    scope_id = value.get("scope_id") or 0
    if scope_id:
        # pyroute2 decodes sin6_scope_id as big-endian; the kernel sends host order
        scope = scope_name(int.from_bytes(struct.pack(">I", scope_id), sys.byteorder))
    return format_endpoint(value["addr"], int(value["port"]), scope)
