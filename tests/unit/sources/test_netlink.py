"""Coalescing multi-message WG_CMD_GET_DEVICE dumps, on the bytes pyroute2 really parses.

The dumps are cut the way the kernel's wg_get_device_dump() cuts them (drivers/net/
wireguard/netlink.c): device attributes while no peer is complete yet, whole peers while
they fit, a peer's allowed IPs until the buffer is full, then the same peer again in
the next message with only its public key and the remaining allowed IPs. Each message
is built as a pyroute2 ``wgmsg``, ENCODED to bytes (the size model below is checked
against the real encoding), concatenated like one recv() buffer, and DECODED by
pyroute2's own Marshal with the ``wgmsg`` class, exactly as at runtime. Runs on pyroute2
0.7.2 (Debian) and 0.9.x (PyPI).
"""

from __future__ import annotations

import base64
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from pyroute2.netlink import NLM_F_MULTI, NLMSG_DONE, nlmsg
from pyroute2.netlink.generic.wireguard import wgmsg

from wgsyncd.sources import netlink
from wgsyncd.sources.kernel import InterfaceReadError, key_from_wire
from wgsyncd.state import Secret, Source

try:  # pyroute2 >= 0.8
    from pyroute2.netlink.marshal import Marshal
except ImportError:  # pyroute2 0.7 (Debian 12)
    from pyroute2.netlink.nlsocket import Marshal

WG_FAMILY_ID = 0x1F  # any id works: the Marshal maps it to wgmsg, like bind() does
IFNAME = "wg-test0"


def _align(n: int) -> int:
    """NLA_ALIGN: attributes are padded to 4 bytes."""
    return (n + 3) & ~3


def _nla(payload: int) -> int:
    """Size of one attribute with ``payload`` bytes."""
    return _align(4 + payload)


@dataclass
class KPeer:
    """One peer as the kernel holds it (raw values)."""

    public: bytes
    psk: bytes = bytes(32)
    endpoint: tuple[str, int] | None = None
    keepalive: int = 0
    hs_sec: int = 0
    rx: int = 0
    tx: int = 0
    allowed: list[tuple[int, str, int]] = field(default_factory=list)  # (family, addr, cidr)

    def fixed_size(self) -> int:
        """Bytes of everything but the allowed IPs (peer nest + attributes)."""
        size = 4 + _nla(32) + _nla(32) + _nla(16) + _nla(2) + _nla(8) + _nla(8) + _nla(4)
        if self.endpoint:
            size += _nla(28 if ":" in self.endpoint[0] else 16)
        return size

    def attrs(self) -> list[list[object]]:
        """The full attribute list, in the kernel's order."""
        out: list[list[object]] = [
            ["WGPEER_A_PUBLIC_KEY", base64.b64encode(self.public).decode()],
            ["WGPEER_A_PRESHARED_KEY", base64.b64encode(self.psk).decode()],
            ["WGPEER_A_LAST_HANDSHAKE_TIME", {"tv_sec": self.hs_sec, "tv_nsec": 123}],
            ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", self.keepalive],
            ["WGPEER_A_TX_BYTES", self.tx],
            ["WGPEER_A_RX_BYTES", self.rx],
            ["WGPEER_A_PROTOCOL_VERSION", 1],
        ]
        if self.endpoint:
            out.append(["WGPEER_A_ENDPOINT", {"addr": self.endpoint[0], "port": self.endpoint[1]}])
        return out


def _allowed_size(entry: tuple[int, str, int]) -> int:
    """One allowed-IP nest: family, address, cidr."""
    return 4 + _nla(2) + _nla(16 if entry[0] == socket.AF_INET6 else 4) + _nla(1)


def _allowed_attr(entry: tuple[int, str, int]) -> dict[str, object]:
    family, addr, cidr = entry
    return {
        "attrs": [
            ["WGALLOWEDIP_A_FAMILY", family],
            ["WGALLOWEDIP_A_IPADDR", socket.inet_pton(family, addr)],
            ["WGALLOWEDIP_A_CIDR_MASK", cidr],
        ]
    }


@dataclass
class KDevice:
    """The device as the kernel holds it."""

    private: bytes | None
    public: bytes | None
    port: int = 51820
    fwmark: int = 0
    peers: list[KPeer] = field(default_factory=list)

    def attrs(self) -> list[list[object]]:
        out: list[list[object]] = [
            ["WGDEVICE_A_LISTEN_PORT", self.port],
            ["WGDEVICE_A_FWMARK", self.fwmark],
            ["WGDEVICE_A_IFINDEX", 7],
            ["WGDEVICE_A_IFNAME", IFNAME],
        ]
        if self.private is not None and self.public is not None:
            out.append(["WGDEVICE_A_PRIVATE_KEY", base64.b64encode(self.private).decode()])
            out.append(["WGDEVICE_A_PUBLIC_KEY", base64.b64encode(self.public).decode()])
        return out

    def attrs_size(self) -> int:
        size = _nla(2) + _nla(4) + _nla(4) + _nla(len(IFNAME) + 1)
        if self.private is not None:
            size += 2 * _nla(32)
        return size


def kernel_dump(dev: KDevice, budget: int) -> list[tuple[list[list[object]], int]]:
    """Cut ``dev`` into messages of at most ``budget`` bytes the way the kernel does.

    Returns (attrs, predicted encoded length) per message.
    """
    messages = []
    cursor = 0  # index of the first peer not yet completely sent
    next_allowed = 0  # > 0: the cursor peer is a continuation from this allowed IP on
    header = 16 + 4  # nlmsghdr + genlmsghdr
    while True:
        attrs: list[list[object]] = []
        size = header
        if cursor == 0:
            # the kernel repeats the device attributes while no peer is complete yet
            attrs += dev.attrs()
            size += dev.attrs_size()
        peers: list[dict[str, object]] = []
        size += 4  # the peers nest
        done = True
        for idx in range(cursor, len(dev.peers)):
            peer = dev.peers[idx]
            if next_allowed:
                p_attrs: list[list[object]] = [
                    ["WGPEER_A_PUBLIC_KEY", base64.b64encode(peer.public).decode()]
                ]
                p_size = 4 + _nla(32)
            else:
                p_attrs, p_size = peer.attrs(), peer.fixed_size()
            if size + p_size + 4 > budget:  # not even the fixed part: cancel the peer
                done = False
                break
            size += p_size + 4  # + allowed-IPs nest
            ips = []
            cut = False
            for ai in range(next_allowed, len(peer.allowed)):
                need = _allowed_size(peer.allowed[ai])
                if size + need > budget:
                    next_allowed, cut = ai, True
                    break
                size += need
                ips.append(_allowed_attr(peer.allowed[ai]))
            p_attrs.append(["WGPEER_A_ALLOWEDIPS", ips])
            peers.append({"attrs": p_attrs})
            if cut:
                done = False
                break
            next_allowed = 0
            cursor = idx + 1
        attrs.append(["WGDEVICE_A_PEERS", peers])
        messages.append((attrs, size))
        if done:
            return messages
        assert peers, "budget too small for a single peer"


def encode(messages: list[tuple[list[list[object]], int]], check_sizes: bool = True) -> bytes:
    """Encode with pyroute2's wgmsg, as the kernel's bytes would look; ends with NLMSG_DONE."""
    data = b""
    for seq, (attrs, predicted) in enumerate(messages):
        msg = wgmsg()
        msg["cmd"] = 0
        msg["version"] = 1
        msg["attrs"] = attrs
        msg["header"]["type"] = WG_FAMILY_ID
        msg["header"]["flags"] = NLM_F_MULTI
        msg["header"]["sequence_number"] = 42
        msg["header"]["pid"] = seq
        msg.encode()
        if check_sizes:
            assert len(msg.data) == predicted, "size model out of step with pyroute2's encoding"
        data += msg.data
    done = nlmsg()
    done["header"]["type"] = NLMSG_DONE
    done["header"]["flags"] = NLM_F_MULTI
    done["header"]["sequence_number"] = 42
    done.encode()
    return data + done.data


def decode(data: bytes, keep_done: bool = False) -> list[object]:
    """Parse one recv() buffer with pyroute2's Marshal, wgmsg registered like bind() does."""
    marshal = Marshal()
    marshal.msg_map[WG_FAMILY_ID] = wgmsg
    return [m for m in marshal.parse(data) if keep_done or m["header"]["type"] == WG_FAMILY_ID]


def roundtrip(dev: KDevice, budget: int) -> tuple[list[object], int]:
    """Cut, encode, decode: the messages the coalescer sees (NLMSG_DONE included), and how many."""
    msgs = decode(encode(kernel_dump(dev, budget)), keep_done=True)
    return msgs, sum(1 for m in msgs if m["header"]["type"] == WG_FAMILY_ID)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def make_peer(i: int, n_allowed: int = 3, **kw: object) -> KPeer:
    """A peer with distinct v4/v6 allowed IPs (TEST-NET / ULA) in a known order."""
    allowed = []
    for j in range(n_allowed):
        if j % 2 == 0:
            allowed.append((socket.AF_INET6, f"fd00:{i:x}:{j:x}::", 64))
        else:
            allowed.append((socket.AF_INET, f"198.51.{j % 256}.{i % 256}", 32))
    return KPeer(public=os.urandom(32), allowed=allowed, **kw)  # type: ignore[arg-type]


def expected_ips(peer: KPeer) -> tuple[str, ...]:
    """What wg prints: inet_ntop's canonical text, in kernel order."""
    return tuple(f"{socket.inet_ntop(f, socket.inet_pton(f, addr))}/{cidr}" for f, addr, cidr in peer.allowed)


def check(dev: KDevice, budget: int, n_messages: int | None = None) -> None:
    """Round-trip ``dev`` and compare every field of the coalesced Interface to the source."""
    msgs, count = roundtrip(dev, budget)
    if n_messages is not None:
        assert count == n_messages
    iface = netlink.coalesce(IFNAME, msgs)
    # the lean raw-bytes path and pyroute2's own decoded attributes must agree exactly
    assert netlink.coalesce(IFNAME, msgs, lean=False) == iface
    assert iface.name == IFNAME
    assert iface.listen_port == dev.port
    assert iface.fwmark == dev.fwmark
    assert iface.implementation == "kernel"
    if dev.private is None:
        assert iface.private_key is None and iface.public_key is None
    else:
        assert iface.private_key == Secret(b64(dev.private))
        assert iface.public_key == b64(dev.public or b"")
    assert list(iface.peers) == [b64(p.public) for p in dev.peers], "peer order or count wrong"
    for kp in dev.peers:
        p = iface.peers[b64(kp.public)]
        assert p.allowed_ips == expected_ips(kp)
        assert p.preshared_key == (None if kp.psk == bytes(32) else Secret(b64(kp.psk)))
        if kp.endpoint is None:
            assert p.endpoint is None
        elif ":" in kp.endpoint[0]:
            assert p.endpoint == f"[{kp.endpoint[0]}]:{kp.endpoint[1]}"
        else:
            assert p.endpoint == f"{kp.endpoint[0]}:{kp.endpoint[1]}"
        assert p.persistent_keepalive == kp.keepalive
        assert p.latest_handshake == (datetime.fromtimestamp(kp.hs_sec, UTC) if kp.hs_sec else None)
        assert (p.rx_bytes, p.tx_bytes) == (kp.rx, kp.tx)
        assert set(p.provenance.values()) == {Source.KERNEL}
        assert "allowed_ips" in p.provenance


def budget_for(dev: KDevice, n_messages: int) -> int:
    """The smallest buffer size that cuts ``dev`` into ``n_messages`` (count falls as size grows)."""
    lo, hi = 2048, 1 << 20
    while lo < hi:
        mid = (lo + hi) // 2
        if len(kernel_dump(dev, mid)) <= n_messages:
            hi = mid
        else:
            lo = mid + 1
    assert len(kernel_dump(dev, lo)) == n_messages
    return lo


def device(peers: list[KPeer], keys: bool = True) -> KDevice:
    priv = os.urandom(32) if keys else None
    return KDevice(private=priv, public=os.urandom(32) if keys else None, fwmark=0x1337, peers=peers)


# ---------------------------------------------------------------- the cases


def test_peer_split_across_two_messages_is_one_peer() -> None:
    big = make_peer(1, n_allowed=60, endpoint=("192.0.2.7", 51820), hs_sec=1_700_000_000, rx=5, tx=9)
    dev = device([make_peer(0), big, make_peer(2)])
    # budget fits peer 0 and roughly half of peer 1's allowed IPs
    msgs = kernel_dump(dev, 1800)
    assert len(msgs) == 2
    # really split: the second message starts with a bare continuation of peer 1
    second_first_peer = msgs[1][0][-1][1][0]["attrs"]
    assert [a[0] for a in second_first_peer] == ["WGPEER_A_PUBLIC_KEY", "WGPEER_A_ALLOWEDIPS"]
    check(dev, 1800, 2)


def test_peer_split_across_three_messages() -> None:
    big = make_peer(1, n_allowed=150, endpoint=("fd00::9", 4242), keepalive=25)
    dev = device([big, make_peer(2)])
    budget = budget_for(dev, 3)
    msgs = decode(encode(kernel_dump(dev, budget)))
    key = b64(big.public).encode()
    # the big peer is in every message, and was never complete until the last one,
    # so the device attributes repeat in each message (the kernel's cursor stays NULL)
    for m in msgs:
        first_peer = m.get_attr("WGDEVICE_A_PEERS")[0]
        assert first_peer.get_attr("WGPEER_A_PUBLIC_KEY") == key
        assert m.get_attr("WGDEVICE_A_IFNAME") == IFNAME
    check(dev, budget, 3)


def test_device_with_zero_peers() -> None:
    check(device([]), 4096, 1)


def test_device_without_identity_has_no_keys() -> None:
    check(device([make_peer(0)], keys=False), 4096, 1)


def test_thousand_peers_in_seventeen_messages() -> None:
    peers = [
        make_peer(
            i,
            n_allowed=1 + i % 5,
            psk=os.urandom(32) if i % 2 else bytes(32),
            endpoint=((f"203.0.113.{i % 250 + 1}", 1000 + i) if i % 3 else (f"fd00::{i + 1:x}", 2000 + i)),
            keepalive=25 if i % 4 == 0 else 0,
            hs_sec=1_700_000_000 + i if i % 7 else 0,
            rx=i * 1000,
            tx=i * 7,
        )
        for i in range(1000)
    ]
    dev = device(peers)
    budget = budget_for(dev, 17)
    msgs = decode(encode(kernel_dump(dev, budget)))
    appearances = sum(len(m.get_attr("WGDEVICE_A_PEERS")) for m in msgs)
    assert appearances > 1000, "no peer was split across messages: the test lost its point"
    check(dev, budget, 17)


def test_endpoints_v4_and_v6_psk_zero_and_set() -> None:
    psk = os.urandom(32)
    dev = device(
        [
            make_peer(0, endpoint=("192.0.2.1", 51820), psk=bytes(32)),
            make_peer(1, endpoint=("fd00::1", 51821), psk=psk),
            make_peer(2, endpoint=None),
        ]
    )
    check(dev, 8192, 1)
    iface = netlink.coalesce(IFNAME, roundtrip(dev, 8192)[0])
    peers = list(iface.peers.values())
    assert peers[0].endpoint == "192.0.2.1:51820" and peers[0].preshared_key is None
    assert peers[1].endpoint == "[fd00::1]:51821" and peers[1].preshared_key == Secret(b64(psk))
    assert peers[2].endpoint is None


def test_private_key_never_in_repr() -> None:
    dev = device([make_peer(0, psk=os.urandom(32))])
    iface = netlink.coalesce(IFNAME, roundtrip(dev, 4096)[0])
    text = repr(iface)
    assert b64(dev.private or b"") not in text
    assert b64(dev.peers[0].psk) not in text


def test_error_message_in_dump_fails_the_interface() -> None:
    msgs, _ = roundtrip(device([make_peer(0)]), 4096)
    msgs[0]["header"]["error"] = OSError(19, "No such device")
    with pytest.raises(InterfaceReadError, match="ENODEV"):
        netlink.coalesce(IFNAME, msgs)


def test_dump_for_another_interface_is_rejected() -> None:
    msgs, _ = roundtrip(device([]), 4096)
    with pytest.raises(InterfaceReadError, match="not 'wg-other'"):
        netlink.coalesce("wg-other", msgs)


def test_key_from_wire_accepts_every_spelling() -> None:
    raw = os.urandom(32)
    text = b64(raw)
    assert key_from_wire(raw, "k") == text
    assert key_from_wire(text.encode(), "k") == text
    assert key_from_wire(text, "k") == text
    assert key_from_wire(raw.hex(), "k") == text
    with pytest.raises(ValueError, match="k: "):
        key_from_wire(b"short", "k")


def test_malformed_attribute_fails_the_interface() -> None:
    data = bytearray(encode(kernel_dump(device([make_peer(0)]), 4096)))
    # the first device attribute claims to run past the end of its message
    data[20:22] = (5000).to_bytes(2, "little")
    with pytest.raises(InterfaceReadError, match="malformed netlink attribute"):
        netlink.coalesce(IFNAME, decode(bytes(data)))


def test_ten_thousand_peers_coalesce() -> None:
    """10,000 peers in kernel-sized (32 KiB) messages all come out; the time is printed, not asserted."""
    import time

    peers = [make_peer(i, endpoint=("192.0.2.1", 1 + i)) for i in range(10_000)]
    dev = device(peers)
    msgs = decode(encode(kernel_dump(dev, 32768), check_sizes=False))
    t0 = time.perf_counter()
    iface = netlink.coalesce(IFNAME, msgs)
    elapsed = time.perf_counter() - t0
    print(f"\ncoalesce 10,000 peers from {len(msgs)} messages: {elapsed:.3f} s")
    assert len(iface.peers) == 10_000
    last = iface.peers[base64.b64encode(peers[-1].public).decode()]
    assert (last.endpoint, last.allowed_ips) == ("192.0.2.1:10000", expected_ips(peers[-1]))
