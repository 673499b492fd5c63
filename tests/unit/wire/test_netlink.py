"""wgsyncd.wire.netlink: the protocol's numbers, and the raw socket's answers and faults.

The numbers are checked against pyroute2's own ``wgmsg`` map (an independent copy of
uapi/linux/wireguard.h), the socket against this machine's real genl controller. A
kernel WireGuard dump needs the VM (tests/test_kernel_vm.py); the dump faults the
kernel makes rarely (an interrupted dump, an error mid-dump, a cut datagram) are fed
through a datagram socket pair here, the one fault a test cannot make real.
"""

from __future__ import annotations

import base64
import socket
import struct
import time

import pytest
from pyroute2.netlink.generic.wireguard import wgmsg

from wgsyncd.wire import netlink, netlink_dump
from wgsyncd.wire.values import InterfaceReadError


def _numbers(prefix: str) -> dict[str, int]:
    """Our constants whose names start with ``prefix``."""
    return {k: v for k, v in vars(netlink).items() if k.startswith(prefix) and isinstance(v, int)}


@pytest.mark.parametrize(
    ("prefix", "nla_map"),
    [
        ("WGDEVICE_A_", wgmsg.nla_map),
        ("WGPEER_A_", wgmsg.wgdevice_peer.nla_map),
        ("WGALLOWEDIP_A_", wgmsg.wgdevice_peer.wgpeer_allowedip.nla_map),
    ],
)
def test_attribute_numbers_match_pyroute2s_map(prefix: str, nla_map: tuple) -> None:
    """The names restore sends through pyroute2 and the numbers the reader parses are one table."""
    theirs = {name: index for index, (name, _kind) in enumerate(nla_map) if not name.endswith("_UNSPEC")}
    assert _numbers(prefix) == theirs


def test_the_genl_controller_answers_on_a_real_socket() -> None:
    """The controller's own family resolves to its fixed id; a family that is not there is FamilyMissing."""
    sock = netlink.NetlinkSocket(netlink.NETLINK_GENERIC, 5.0, "test")
    try:
        assert netlink.family_id(sock, "nlctrl") == netlink.GENL_ID_CTRL
        with pytest.raises(netlink.FamilyMissing):
            netlink.family_id(sock, "wgsyncd-none")
    finally:
        sock.close()


def test_the_link_dump_lists_only_wireguard_links() -> None:
    """A real rtnetlink dump: the loopback link is there, and is not a WireGuard link."""
    sock = netlink.NetlinkSocket(netlink.NETLINK_ROUTE, 5.0, "test")
    try:
        flags = netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP
        answer = sock.messages(sock.request(netlink.RTM_GETLINK, flags, netlink.IFINFO.pack(0, 0, 0, 0, 0)))
    finally:
        sock.close()
    links = [netlink._link(d, o + 16 + netlink.IFINFO.size, o + n) for d, o, n, _t in answer]
    assert ("lo", None) in links
    wireguard = {name for name, kind in links if kind == "wireguard"}
    assert set(netlink.list_interfaces(5.0)) == wireguard


# ---------------------------------------------------------------- faults through a socket pair


def _message(typ: int, flags: int, seq: int, payload: bytes) -> bytes:
    """One netlink message, padded."""
    data = netlink.NLMSG_HEADER.pack(16 + len(payload), typ, flags, seq, 0) + payload
    return data + b"\0" * (-len(data) % 4)


def _device_payload(name: str, public: bytes) -> bytes:
    """A WG_CMD_GET_DEVICE answer with the device name and one peer carrying only its key."""
    peer = netlink.nla(netlink.WGPEER_A_PUBLIC_KEY, public)
    peers = netlink.nla(netlink.WGDEVICE_A_PEERS | 0x8000, netlink.nla(0 | 0x8000, peer))
    return (
        netlink.GENL_HEADER.pack(0, 1, 0)
        + netlink.nla(netlink.WGDEVICE_A_IFNAME, name.encode() + b"\0")
        + peers
    )


class _Pair:
    """A NetlinkSocket whose kernel side is the test: datagrams written here are what it reads."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock = netlink.NetlinkSocket.__new__(netlink.NetlinkSocket)
        self.sock.what, self.sock.timeout, self.sock.seq = "device dump", 2.0, 0
        self.sock.deadline = time.monotonic() + 5.0
        self.sock.sock = self.ours

    def send(self, *messages: bytes) -> None:
        self.theirs.send(b"".join(messages))

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def pair():
    p = _Pair()
    yield p
    p.close()


KEY = bytes(range(32))


def test_a_dump_over_two_datagrams_is_read_to_done_and_folded(pair: _Pair) -> None:
    multi = netlink.NLM_F_MULTI
    pair.send(_message(0x20, multi, 1, _device_payload("wgx", KEY)))
    pair.send(
        _message(0x20, multi, 1, _device_payload("wgx", bytes(31) + b"\1")), _message(3, multi, 1, bytes(4))
    )
    messages = pair.sock.messages(1)
    iface = netlink_dump.fold_dump("wgx", messages)
    assert list(iface.peers) == [base64.b64encode(KEY).decode(), base64.b64encode(bytes(31) + b"\1").decode()]


def test_an_interrupted_dump_is_flagged_after_it_is_read_to_its_end(pair: _Pair) -> None:
    flags = netlink.NLM_F_MULTI | netlink.NLM_F_DUMP_INTR
    pair.send(_message(0x20, flags, 1, _device_payload("wgx", KEY)), _message(3, flags, 1, bytes(4)))
    with pytest.raises(netlink._Interrupted):
        pair.sock.messages(1)


def test_an_error_in_the_dump_is_an_oserror_with_its_errno(pair: _Pair) -> None:
    pair.send(_message(2, 0, 1, struct.pack("=i", -19) + bytes(16)))
    with pytest.raises(OSError) as caught:
        pair.sock.messages(1)
    assert caught.value.errno == 19


def test_a_message_longer_than_its_datagram_is_refused(pair: _Pair) -> None:
    data = _message(0x20, netlink.NLM_F_MULTI, 1, _device_payload("wgx", KEY))
    pair.send(data[:-8])
    with pytest.raises(InterfaceReadError, match="malformed netlink message"):
        pair.sock.messages(1)


def test_answers_to_another_request_are_skipped(pair: _Pair) -> None:
    pair.send(
        _message(0x20, netlink.NLM_F_MULTI, 7, _device_payload("wgx", KEY)), _message(3, 0, 1, bytes(4))
    )
    assert pair.sock.messages(1) == []


def test_no_answer_within_the_deadline_names_the_step() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock = netlink.NetlinkSocket.__new__(netlink.NetlinkSocket)
    sock.what, sock.timeout, sock.seq, sock.sock = "device dump", 0.05, 0, ours
    sock.deadline = 0.0
    try:
        with pytest.raises(InterfaceReadError, match=r"device dump: no answer within 0\.05 s"):
            sock.messages(1)
    finally:
        ours.close()
        theirs.close()
