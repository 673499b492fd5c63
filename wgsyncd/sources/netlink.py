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

import base64
import errno
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from wgsyncd.canonical import format_endpoint
from wgsyncd.sources.kernel import (
    InterfaceReadError,
    RawPeer,
    key_from_wire,
    make_interface,
)
from wgsyncd.state import Interface, StateError

NLM_F_DUMP_INTR = 0x10
DUMP_RETRIES = 3
T = TypeVar("T")


class FamilyMissing(Exception):
    """The ``wireguard`` generic netlink family is not there: no kernel module, no kernel interfaces."""


def bounded(fn: Callable[[], T], timeout: float, what: str) -> T:
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
        return bounded(dump, timeout, "link dump")
    except InterfaceReadError:
        raise
    except Exception as exc:  # pyroute2 raises NetlinkError, OSError, or its own types
        raise InterfaceReadError(f"link dump failed: {describe(exc)}") from None


def read_interface(name: str, timeout: float) -> Interface:
    """Dump one kernel interface and coalesce its messages; retried when the dump was interrupted."""
    try:
        messages = bounded(lambda: _dump(name), timeout, "device dump")
    except (FamilyMissing, InterfaceReadError):
        raise
    except Exception as exc:  # anything pyroute2 raises beyond NetlinkError
        raise InterfaceReadError(f"device dump failed: {describe(exc)}") from None
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
            raise InterfaceReadError(f"genl: {describe(exc)}") from None
        try:
            messages = list(wg.info(name))
        except NetlinkDumpInterrupted:
            continue
        except NetlinkError as exc:
            if exc.code == errno.ENOENT:  # 0.9 resolves the family lazily, here
                raise FamilyMissing() from None
            raise InterfaceReadError(f"device dump: {describe(exc)}") from None
        finally:
            wg.close()
        if not any(m["header"].get("flags", 0) & NLM_F_DUMP_INTR for m in messages):
            return messages
    raise InterfaceReadError(f"device dump interrupted {DUMP_RETRIES} times (peers changing fast)")


def describe(exc: BaseException) -> str:
    """A short reason for an error: errno name and text, never data."""
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return f"{errno.errorcode[code]} ({code}): {exc.__class__.__name__}"
    return exc.__class__.__name__


def coalesce(name: str, messages: Iterable[Any], *, lean: bool = True) -> Interface:
    """Fold a multi-message WG_CMD_GET_DEVICE dump into one Interface.

    ``messages`` are the pyroute2 ``wgmsg`` objects a dump returns (control messages
    such as NLMSG_DONE are skipped). pyroute2 decodes nested attributes lazily and
    slowly (about 4 s for 10,000 peers here, 18x that in a small VM), so by default
    the attributes are read straight from each message's raw bytes (``msg.data`` at
    ``msg.offset``), which both pyroute2 versions keep; ``lean=False`` walks pyroute2's
    own decoded attributes instead (used as a cross-check in the tests).
    """
    device: dict[str, Any] = {}
    peers: dict[str, RawPeer] = {}
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
                    _fold_peer(peers, peer, name)
            else:
                device[key] = value
    ifname = device.get("WGDEVICE_A_IFNAME")
    if ifname is not None and ifname != name:
        raise InterfaceReadError(f"dump answered for {ifname!r}, not {name!r}")
    iface = _build_interface(name, device)
    for acc in peers.values():
        iface.peers[acc.public] = acc.build()
    return iface


# ---- the lean path: attributes from the raw message bytes (uapi/linux/wireguard.h)

NLMSG_MIN_TYPE = 0x10
_GENL_HEADER = 16 + 4  # nlmsghdr + genlmsghdr
_NLA = struct.Struct("=HH")
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
_S64 = struct.Struct("=q")
_BE16 = struct.Struct(">H")
_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
_DEVICE_KEYS = {2: "WGDEVICE_A_IFNAME", 3: "WGDEVICE_A_PRIVATE_KEY", 4: "WGDEVICE_A_PUBLIC_KEY"}


def _nlas(buf: Any, start: int, end: int) -> list[tuple[int, int, int]]:
    """(type, payload start, payload end) of the attributes in ``buf[start:end]``; checks bounds."""
    out = []
    while start + 4 <= end:
        length, typ = _NLA.unpack_from(buf, start)
        if length < 4 or start + length > end:
            raise InterfaceReadError("malformed netlink attribute in dump")
        out.append((typ & _TYPE_MASK, start + 4, start + length))
        start += (length + 3) & ~3
    return out


def _fold_raw(buf: Any, offset: int, length: int, device: dict[str, Any], peers: dict[str, RawPeer]) -> None:
    """One message's device attributes and peers, from its bytes."""
    try:
        for typ, a, b in _nlas(buf, offset + _GENL_HEADER, offset + length):
            if typ == 8:  # WGDEVICE_A_PEERS
                for _t, pa, pb in _nlas(buf, a, b):
                    _fold_raw_peer(buf, pa, pb, peers)
            elif typ == 2:
                device[_DEVICE_KEYS[typ]] = bytes(buf[a:b]).split(b"\0", 1)[0].decode()
            elif typ in (3, 4):
                device[_DEVICE_KEYS[typ]] = bytes(buf[a:b])
            elif typ == 6:
                device["WGDEVICE_A_LISTEN_PORT"] = _U16.unpack_from(buf, a)[0]
            elif typ == 7:
                device["WGDEVICE_A_FWMARK"] = _U32.unpack_from(buf, a)[0]
    except (struct.error, ValueError, OSError) as exc:
        raise InterfaceReadError(f"malformed dump message: {exc.__class__.__name__}") from None


def _raw_key(buf: Any, a: int, b: int) -> str:
    """A 32-byte key attribute as base64."""
    if b - a != 32:
        raise InterfaceReadError(f"key attribute of {b - a} bytes in dump")
    return base64.b64encode(bytes(buf[a:b])).decode()


def _fold_raw_peer(buf: Any, start: int, end: int, peers: dict[str, RawPeer]) -> None:
    """One peer nest; a public key seen before (a continuation) only adds allowed IPs."""
    attrs = _nlas(buf, start, end)
    acc = None
    for typ, a, b in attrs:
        if typ == 1:
            public = _raw_key(buf, a, b)
            acc = peers.get(public)
            if acc is None:
                acc = peers[public] = RawPeer(public)
            break
    if acc is None:
        raise InterfaceReadError("peer without public key in dump")
    for typ, a, b in attrs:
        if typ == 9:  # WGPEER_A_ALLOWEDIPS
            allowed = acc.allowed
            for _t, ia, ib in _nlas(buf, a, b):
                allowed.append(_raw_allowed_ip(buf, ia, ib))
        elif typ == 2:
            acc.psk = _raw_key(buf, a, b)
        elif typ == 4:
            acc.endpoint = _raw_endpoint(buf, a, b)
        elif typ == 5:
            acc.keepalive = _U16.unpack_from(buf, a)[0]
        elif typ == 6:
            acc.hs = _S64.unpack_from(buf, a)[0]  # struct __kernel_timespec: tv_sec first
        elif typ == 7:
            acc.rx = _U64.unpack_from(buf, a)[0]
        elif typ == 8:
            acc.tx = _U64.unpack_from(buf, a)[0]


def _raw_allowed_ip(buf: Any, start: int, end: int) -> str:
    """``addr/cidr`` from an allowed-IP nest (family, address, cidr), inet_ntop like wg."""
    family = cidr = None
    addr = b""
    for typ, a, b in _nlas(buf, start, end):
        if typ == 1:
            family = _U16.unpack_from(buf, a)[0]
        elif typ == 2:
            addr = bytes(buf[a:b])
        elif typ == 3:
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
            addr = f"{addr}%{_scope_name(scope_id)}"
        return f"[{addr}]:{port}"
    raise InterfaceReadError(f"endpoint of family {family} in dump")


def _scope_name(index: int) -> str:
    """An IPv6 scope id as getnameinfo prints it: the interface name, else the number."""
    try:
        return socket.if_indextoname(index)
    except OSError:
        return str(index)


# ---- the pyroute2-attribute path


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


def _fold_peer(peers: dict[str, RawPeer], peer: Any, name: str) -> None:
    """Merge one peer nest into the accumulator; a repeated public key only adds allowed IPs."""
    attrs = peer["attrs"]
    acc: RawPeer | None = None
    for attr in attrs:
        if attr[0] == "WGPEER_A_PUBLIC_KEY":
            public = key_from_wire(attr[1], f"{name}: peer public key")
            acc = peers.get(public)
            if acc is None:
                acc = peers[public] = RawPeer(public)
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
        scope = _scope_name(int.from_bytes(struct.pack(">I", scope_id), sys.byteorder))
    return format_endpoint(value["addr"], int(value["port"]), scope)
