"""Kernel WireGuard interfaces through pyroute2 (generic netlink ``wireguard`` family).

The kernel answers WG_CMD_GET_DEVICE as a *dump*: several messages, each as full as
the socket buffer allows. The device attributes come with the first message (and may
repeat); a peer whose allowed IPs do not fit is cut and continued in the next message,
where it appears again with only its public key and the remaining allowed IPs.
:func:`coalesce` folds all messages into one Interface by public key, in kernel order.

Works with pyroute2 0.7.2 (Debian 12) and 0.9.x (PyPI): both decode with the same
``wgmsg`` classes (keys as base64 *bytes*, allowed IPs with a computed ``addr``), but
the socket layer differs (sync vs asyncio), so every call runs in a worker thread
bounded by ``timeout``.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from wgsyncd.sources.kernel import (
    InterfaceReadError,
    format_endpoint,
    key_from_wire,
    make_interface,
    make_peer,
)
from wgsyncd.state import Interface, StateError

NLM_F_DUMP_INTR = 0x10
DUMP_RETRIES = 3
T = TypeVar("T")


class FamilyMissing(Exception):
    """The ``wireguard`` generic netlink family is not there: no kernel module, no kernel interfaces."""


def _bounded(fn: Callable[[], T], timeout: float, what: str) -> T:
    """Run ``fn`` in a daemon thread and give up after ``timeout`` seconds.

    pyroute2 0.9 runs its own asyncio loop and 0.7 blocks in recv(); neither takes a
    timeout for a dump, so the deadline is enforced from outside. A stuck call leaves
    a daemon thread behind rather than hanging the daemon loop (and its watchdog).
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=run, name=f"wgsyncd-netlink-{what}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise InterfaceReadError(f"{what}: no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def list_interfaces(timeout: float) -> list[str]:
    """Names of links whose kind is ``wireguard``, from one rtnetlink link dump."""

    def dump() -> list[str]:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            names = []
            for link in ipr.get_links():
                info = link.get_attr("IFLA_LINKINFO")
                if info is not None and info.get_attr("IFLA_INFO_KIND") == "wireguard":
                    names.append(link.get_attr("IFLA_IFNAME"))
            return names

    try:
        return _bounded(dump, timeout, "link dump")
    except InterfaceReadError:
        raise
    except Exception as exc:  # pyroute2 raises NetlinkError, OSError, or its own types
        raise InterfaceReadError(f"link dump failed: {_describe(exc)}") from None


def read_interface(name: str, timeout: float) -> Interface:
    """Dump one kernel interface and coalesce its messages; retried when the dump was interrupted."""
    try:
        messages = _bounded(lambda: _dump(name), timeout, "device dump")
    except (FamilyMissing, InterfaceReadError):
        raise
    except Exception as exc:  # anything pyroute2 raises beyond NetlinkError
        raise InterfaceReadError(f"device dump failed: {_describe(exc)}") from None
    try:
        return coalesce(name, messages)
    except StateError as exc:
        raise InterfaceReadError(str(exc)) from None


def _dump(name: str) -> list[Any]:
    """All messages of WG_CMD_GET_DEVICE for ``name``; raises FamilyMissing / InterfaceReadError."""
    from pyroute2 import WireGuard
    from pyroute2.netlink.exceptions import NetlinkDumpInterrupted, NetlinkError

    for _attempt in range(DUMP_RETRIES):
        try:
            wg = WireGuard()
        except NetlinkError as exc:
            if exc.code == errno.ENOENT:
                raise FamilyMissing() from None
            raise InterfaceReadError(f"genl: {_describe(exc)}") from None
        try:
            messages = list(wg.info(name))
        except NetlinkDumpInterrupted:
            continue
        except NetlinkError as exc:
            if exc.code == errno.ENOENT:  # 0.9 resolves the family lazily, here
                raise FamilyMissing() from None
            raise InterfaceReadError(f"device dump: {_describe(exc)}") from None
        finally:
            wg.close()
        if not any(m["header"].get("flags", 0) & NLM_F_DUMP_INTR for m in messages):
            return messages
    raise InterfaceReadError(f"device dump interrupted {DUMP_RETRIES} times (peers changing fast)")


def _describe(exc: BaseException) -> str:
    """A short reason for an error: errno name and text, never data."""
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return f"{errno.errorcode[code]} ({code}): {exc.__class__.__name__}"
    return exc.__class__.__name__


class _PeerAcc:
    """One peer's attributes collected across messages."""

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


def coalesce(name: str, messages: Iterable[Any]) -> Interface:
    """Fold a multi-message WG_CMD_GET_DEVICE dump into one Interface.

    ``messages`` are pyroute2-decoded ``wgmsg`` objects (non-wgmsg ones such as
    NLMSG_DONE are skipped). One pass over the attributes, no ``get_attr`` scans:
    this runs for 10,000 peers per cycle.
    """
    device: dict[str, Any] = {}
    peers: dict[str, _PeerAcc] = {}
    for msg in messages:
        error = msg["header"].get("error")
        if error is not None:
            raise InterfaceReadError(f"netlink error in dump: {_describe(error)}")
        for attr in msg.get("attrs") or ():
            key, value = attr[0], attr[1]
            if key == "WGDEVICE_A_PEERS":
                for peer in value:
                    _fold_peer(peers, peer, name)
            else:
                device[key] = value
    ifname = device.get("WGDEVICE_A_IFNAME")
    if ifname is not None and ifname != name:
        raise InterfaceReadError(f"dump answered for {ifname!r}, not {name!r}")
    iface = _build_interface(name, device)
    for acc in peers.values():
        iface.peers[acc.public] = make_peer(
            acc.public, acc.psk, tuple(acc.allowed), acc.endpoint, acc.keepalive, acc.hs, acc.rx, acc.tx
        )
    return iface


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


def _fold_peer(peers: dict[str, _PeerAcc], peer: Any, name: str) -> None:
    """Merge one peer nest into the accumulator; a repeated public key only adds allowed IPs."""
    attrs = peer["attrs"]
    acc: _PeerAcc | None = None
    for attr in attrs:
        if attr[0] == "WGPEER_A_PUBLIC_KEY":
            public = key_from_wire(attr[1], f"{name}: peer public key")
            acc = peers.get(public)
            if acc is None:
                acc = peers[public] = _PeerAcc(public)
            break
    if acc is None:
        raise InterfaceReadError("peer without public key in dump")
    for attr in attrs:
        key, value = attr[0], attr[1]
        if key == "WGPEER_A_ALLOWEDIPS":
            acc.allowed.extend(_allowed_ip(ip) for ip in value)
        elif key == "WGPEER_A_ENDPOINT":
            acc.endpoint = _endpoint(value)
        elif key == "WGPEER_A_PRESHARED_KEY":
            acc.psk = key_from_wire(value, f"{name}: peer preshared key")
        elif key == "WGPEER_A_LAST_HANDSHAKE_TIME":
            acc.hs = int(value["tv_sec"])
        elif key == "WGPEER_A_RX_BYTES":
            acc.rx = int(value)
        elif key == "WGPEER_A_TX_BYTES":
            acc.tx = int(value)
        elif key == "WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL":
            acc.keepalive = int(value)


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
        host_order = int.from_bytes(struct.pack(">I", scope_id), sys.byteorder)
        try:
            scope = socket.if_indextoname(host_order)
        except OSError:
            scope = str(host_order)
    return format_endpoint(value["addr"], int(value["port"]), scope)
