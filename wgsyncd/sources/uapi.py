"""Userspace WireGuard (wireguard-go, boringtun): the kernel source's ``uapi`` backend.

The control-socket protocol (exchange, reply parser) is :mod:`wgsyncd.wire.uapi`;
this module reads one interface with it, keeping each socket's peer blocks from the
last read so unchanged peers are the same Peer objects next cycle.
"""

from __future__ import annotations

from wgsyncd.state import Interface, Peer
from wgsyncd.wire.uapi import (  # noqa: F401  (re-exported: the backend's names)
    REQUEST,
    StaleSocket,
    get,
    list_interfaces,
    parse_reply,
    parse_uapi,
    socket_path,
)

# socket path -> {peer block bytes: its Peer}, from the last read of that socket
_BLOCKS: dict[str, dict[bytes, Peer]] = {}


def forget_others(paths: set[str]) -> None:
    """Drop the peer blocks of sockets that are gone (their interfaces were deleted)."""
    for path in [p for p in _BLOCKS if p not in paths]:
        del _BLOCKS[path]


def read_interface(name: str, path: str, timeout: float) -> Interface:
    """Ask one control socket for its state and parse it; the whole exchange is bounded by ``timeout``.

    Raises StaleSocket when nobody listens (connection refused) and
    InterfaceReadError for everything else that stops a complete read.
    """
    data = get(path, timeout)
    memo = _BLOCKS.get(path, {})
    fresh: dict[bytes, Peer] = {}
    try:
        return parse_reply(name, data, memo, fresh)
    finally:
        _BLOCKS[path] = fresh  # only this read's blocks: the memo cannot outgrow the interface
