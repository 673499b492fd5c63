"""Netlink, the kernel WireGuard module's protocol: its numbers, and the socket exchanges.

Every attribute number and flag of uapi/linux/wireguard.h (and the few rtnetlink and
genl-controller ones the reader needs) is named here, once; the dump parser
(:mod:`wgsyncd.wire.netlink_dump`), the message builder
(:mod:`wgsyncd.wire.netlink_set`) and the tests use these names.

Reading speaks netlink through a plain ``AF_NETLINK`` socket: resolve the
``wireguard`` genl family, ask for WG_CMD_GET_DEVICE as a dump, read datagrams until
NLMSG_DONE, retry a dump the kernel flagged as interrupted. No pyroute2 there: its
socket layer and lazy decoding cost more than the whole parse (1.4-1.7x ``wg show all
dump`` + parse for 10,000 peers in the kernel VM, see tests/bench/kernel_vm.py), and
a socket timeout bounds the exchange without a helper thread. Writing (restore)
sends pyroute2 ``wgmsg`` messages (:func:`send_set`), bounded by :func:`bounded`.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from wgsyncd.wire.values import InterfaceReadError

# ---- uapi/linux/wireguard.h
WG_GENL_NAME = "wireguard"
WG_GENL_VERSION = 1
WG_CMD_GET_DEVICE = 0
WG_CMD_SET_DEVICE = 1
WGDEVICE_A_IFINDEX = 1
WGDEVICE_A_IFNAME = 2
WGDEVICE_A_PRIVATE_KEY = 3
WGDEVICE_A_PUBLIC_KEY = 4
WGDEVICE_A_FLAGS = 5
WGDEVICE_A_LISTEN_PORT = 6
WGDEVICE_A_FWMARK = 7
WGDEVICE_A_PEERS = 8
WGPEER_A_PUBLIC_KEY = 1
WGPEER_A_PRESHARED_KEY = 2
WGPEER_A_FLAGS = 3
WGPEER_A_ENDPOINT = 4
WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL = 5
WGPEER_A_LAST_HANDSHAKE_TIME = 6
WGPEER_A_RX_BYTES = 7
WGPEER_A_TX_BYTES = 8
WGPEER_A_ALLOWEDIPS = 9
WGPEER_A_PROTOCOL_VERSION = 10
WGALLOWEDIP_A_FAMILY = 1
WGALLOWEDIP_A_IPADDR = 2
WGALLOWEDIP_A_CIDR_MASK = 3
WGDEVICE_F_REPLACE_PEERS = 1 << 0
WGPEER_F_REMOVE_ME = 1 << 0
WGPEER_F_REPLACE_ALLOWEDIPS = 1 << 1
WGPEER_F_UPDATE_ONLY = 1 << 2

# ---- netlink, genl controller, rtnetlink (linux/netlink.h, genetlink.h, rtnetlink.h, if_link.h)
NETLINK_ROUTE, NETLINK_GENERIC = 0, 16  # protocols (Python's socket module lacks the second)
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLMSG_MIN_TYPE = 0x10
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
RTM_GETLINK = 18
IFLA_IFNAME = 3
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, seq, pid
GENL_HEADER = struct.Struct("=BBH")  # cmd, version, reserved
IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
NLA = struct.Struct("=HH")
DUMP_RETRIES = 3
_RECV_BUFFER = 1 << 18  # a dump datagram is at most 32 KiB; MSG_TRUNC is checked anyway
T = TypeVar("T")


class FamilyMissing(Exception):
    """The ``wireguard`` generic netlink family is not there: no kernel module, no kernel interfaces."""


class _Interrupted(Exception):
    """The kernel flagged the dump NLM_F_DUMP_INTR: the peers changed while it was read."""


def describe(exc: BaseException) -> str:
    """A short reason for an error: errno name and text, never data."""
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return f"{errno.errorcode[code]} ({code}): {exc.__class__.__name__}"
    return exc.__class__.__name__


def nla(typ: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    return NLA.pack(4 + len(payload), typ) + payload + b"\0" * (-len(payload) % 4)


def nlas(buf: Any, start: int, end: int) -> list[tuple[int, int, int]]:
    """(type, payload start, payload end) of the attributes in ``buf[start:end]``; checks bounds."""
    out = []
    while start + 4 <= end:
        length, typ = NLA.unpack_from(buf, start)
        if length < 4 or start + length > end:
            raise InterfaceReadError("malformed netlink attribute in dump")
        out.append((typ & NLA_TYPE_MASK, start + 4, start + length))
        start += (length + 3) & ~3
    return out


# ---------------------------------------------------------------- the raw socket


class NetlinkSocket:
    """One AF_NETLINK socket with a deadline for the whole exchange."""

    def __init__(self, protocol: int, timeout: float, what: str) -> None:
        self.what = what
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.seq = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
        self.sock.bind((0, 0))

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def request(self, msg_type: int, flags: int, payload: bytes) -> int:
        """Send one request; returns its sequence number."""
        self.seq += 1
        self.sock.send(NLMSG_HEADER.pack(16 + len(payload), msg_type, flags, self.seq, 0) + payload)
        return self.seq

    def messages(self, seq: int) -> list[tuple[bytes, int, int, int]]:
        """(datagram, offset, length, type) of every message answering ``seq``, up to DONE or the ack.

        NLMSG_ERROR with an errno becomes OSError; a dump flagged NLM_F_DUMP_INTR
        raises _Interrupted once it is read to its end (the socket stays usable).
        """
        out: list[tuple[bytes, int, int, int]] = []
        interrupted = False
        while True:
            data = self._recv()
            offset = 0
            while offset + 16 <= len(data):
                length, typ, flags, mseq, _pid = NLMSG_HEADER.unpack_from(data, offset)
                if length < 16 or offset + length > len(data):
                    raise InterfaceReadError(f"{self.what}: malformed netlink message")
                if mseq == seq:
                    interrupted |= bool(flags & NLM_F_DUMP_INTR)
                    if typ in (NLMSG_ERROR, NLMSG_DONE):
                        code = struct.unpack_from("=i", data, offset + 16)[0] if length >= 20 else 0
                        if code < 0:
                            raise OSError(-code, os.strerror(-code))
                        if interrupted:
                            raise _Interrupted()
                        return out
                    if typ == NLMSG_OVERRUN:
                        raise InterfaceReadError(f"{self.what}: netlink overrun")
                    if typ >= NLMSG_MIN_TYPE:
                        out.append((data, offset, length, typ))
                        if not flags & NLM_F_MULTI:
                            return out
                offset += (length + 3) & ~3

    def _recv(self) -> bytes:
        """One datagram within the deadline; a cut one (MSG_TRUNC) is an error, never half-read."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise InterfaceReadError(f"{self.what}: no answer within {self.timeout:g} s")
        self.sock.settimeout(left)
        try:
            data, _anc, flags, _addr = self.sock.recvmsg(_RECV_BUFFER)
        except TimeoutError:
            raise InterfaceReadError(f"{self.what}: no answer within {self.timeout:g} s") from None
        if flags & socket.MSG_TRUNC:
            raise InterfaceReadError(f"{self.what}: netlink message larger than {_RECV_BUFFER} bytes")
        return data


def family_id(sock: NetlinkSocket, family: str = WG_GENL_NAME) -> int:
    """A genl family's id (``wireguard``'s) from the controller; FamilyMissing when it has none."""
    payload = GENL_HEADER.pack(CTRL_CMD_GETFAMILY, 1, 0) + nla(CTRL_ATTR_FAMILY_NAME, family.encode() + b"\0")
    try:
        answer = sock.messages(sock.request(GENL_ID_CTRL, NLM_F_REQUEST, payload))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise FamilyMissing() from None
        raise
    for data, offset, length, _typ in answer:
        for typ, a, _b in nlas(data, offset + 20, offset + length):
            if typ == CTRL_ATTR_FAMILY_ID:
                return struct.unpack_from("=H", data, a)[0]
    raise FamilyMissing()


def dump_device(name: str, timeout: float) -> list[tuple[bytes, int, int, int]]:
    """Every message of WG_CMD_GET_DEVICE for ``name`` as (datagram, offset, length, type).

    Retried when the kernel flags the dump interrupted (peers changed meanwhile);
    raises FamilyMissing (no module) or InterfaceReadError, never returns half a dump.
    """
    request = GENL_HEADER.pack(WG_CMD_GET_DEVICE, WG_GENL_VERSION, 0) + nla(
        WGDEVICE_A_IFNAME, name.encode() + b"\0"
    )
    try:
        sock = NetlinkSocket(NETLINK_GENERIC, timeout, "device dump")
    except OSError as exc:
        raise InterfaceReadError(f"genl: {describe(exc)}") from None
    try:
        family = family_id(sock)
        for _attempt in range(DUMP_RETRIES):
            try:
                return sock.messages(sock.request(family, NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP, request))
            except _Interrupted:
                continue
    except OSError as exc:
        raise InterfaceReadError(f"device dump: {describe(exc)}") from None
    finally:
        sock.close()
    raise InterfaceReadError(f"device dump interrupted {DUMP_RETRIES} times (peers changing fast)")


def list_interfaces(timeout: float) -> list[str]:
    """Names of links whose kind is ``wireguard``, from one rtnetlink link dump."""
    try:
        sock = NetlinkSocket(NETLINK_ROUTE, timeout, "link dump")
    except OSError as exc:
        raise InterfaceReadError(f"link dump failed: {describe(exc)}") from None
    names = []
    try:
        for _attempt in range(DUMP_RETRIES):
            try:
                answer = sock.messages(
                    sock.request(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, IFINFO.pack(0, 0, 0, 0, 0))
                )
                break
            except _Interrupted:
                continue
        else:
            raise InterfaceReadError(f"link dump interrupted {DUMP_RETRIES} times")
        for data, offset, length, _typ in answer:
            name, kind = _link(data, offset + 16 + IFINFO.size, offset + length)
            if kind == WG_GENL_NAME and name:
                names.append(name)
    except OSError as exc:
        raise InterfaceReadError(f"link dump failed: {describe(exc)}") from None
    finally:
        sock.close()
    return names


def _link(data: bytes, start: int, end: int) -> tuple[str | None, str | None]:
    """(IFLA_IFNAME, IFLA_INFO_KIND) of one RTM_NEWLINK message."""
    name = kind = None
    for typ, a, b in nlas(data, start, end):
        if typ == IFLA_IFNAME:
            name = data[a:b].split(b"\0", 1)[0].decode("ascii", "replace")
        elif typ == IFLA_LINKINFO:
            for ityp, ia, ib in nlas(data, a, b):
                if ityp == IFLA_INFO_KIND:
                    kind = data[ia:ib].split(b"\0", 1)[0].decode("ascii", "replace")
    return name, kind


# ---------------------------------------------------------------- writing (pyroute2)


def bounded(fn: Callable[[], T], timeout: float, what: str) -> T:
    """Run ``fn`` in a daemon thread and give up after ``timeout`` seconds.

    pyroute2 0.9 runs its own asyncio loop and 0.7 blocks in recv(); neither takes a
    timeout for a request, so the deadline is enforced from outside. A stuck call
    leaves a daemon thread behind rather than hanging the caller.
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


class SetRefused(Exception):
    """The kernel refused message ``index`` (0-based) of a WG_CMD_SET_DEVICE series."""

    def __init__(self, index: int, total: int, reason: str) -> None:
        super().__init__(f"message {index + 1} of {total} refused ({reason})")
        self.index, self.total, self.reason = index, total, reason


def send_set(messages: list[list[list[Any]]], timeout: float, what: str) -> None:
    """Send each WG_CMD_SET_DEVICE attribute list with NLM_F_ACK and wait for its answer.

    The messages are pyroute2 ``wgmsg`` attribute lists (:mod:`wgsyncd.wire.netlink_set`);
    the first refusal stops the series (SetRefused); the deadline passing raises
    InterfaceReadError. The kernel applies each message whole, not the series.
    """

    def send() -> None:
        from pyroute2 import WireGuard
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
                    raise SetRefused(index, len(messages), describe(exc)) from None
        finally:
            wg.close()

    bounded(send, timeout, what)
