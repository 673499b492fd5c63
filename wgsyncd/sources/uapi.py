"""Userspace WireGuard (wireguard-go, boringtun): the kernel source's ``uapi`` backend.

The control-socket protocol (exchange, reply parser) is :mod:`wgsyncd.wire.uapi`;
this module reads one interface with it, keeping each socket's peer blocks from the
last read (in the caller's memo) so unchanged peers are the same Peer objects next cycle.
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
    read,
    socket_path,
)


def forget_others(paths: set[str], blocks: dict[str, dict[bytes, Peer]]) -> None:
    """Drop the peer blocks of sockets that are gone (their interfaces were deleted)."""
    for path in [p for p in blocks if p not in paths]:
        del blocks[path]


def read_interface(
    name: str, path: str, timeout: float, blocks: dict[str, dict[bytes, Peer]] | None = None
) -> Interface:
    """Ask one control socket for its state and parse it; the whole exchange is bounded by ``timeout``.

    Raises StaleSocket when nobody listens (connection refused) and
    InterfaceReadError for everything else that stops a complete read. ``blocks`` is the
    caller's memo (memo.Memo.uapi): socket path -> {blake2b-128 of a peer block: its Peer}, last read.
    """
    blocks = {} if blocks is None else blocks
    memo = blocks.get(path, {})
    fresh: dict[bytes, Peer] = {}
    try:
        return read(name, path, timeout, memo, fresh)
    finally:
        blocks[path] = fresh  # only this read's blocks: the memo cannot outgrow the interface
