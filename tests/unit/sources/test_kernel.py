"""parse_wg_dump (``wg show ... dump``) and parse_uapi (control socket ``get=1``) on fixed texts."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime

import pytest

from wgsyncd.sources.kernel import DumpParseError, InterfaceReadError, parse_wg_dump
from wgsyncd.sources.uapi import parse_reply, parse_uapi
from wgsyncd.state import Secret, Source, public_key_from_private


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


PRIV, PUB, P1, P2, PSK = key(), key(), key(), key(), key()


def test_single_interface_dump() -> None:
    text = (
        f"{PRIV}\t{PUB}\t51820\toff\n"
        f"{P1}\t{PSK}\t192.0.2.1:51820\t10.0.0.2/32,fd00::2/128\t1700000000\t100\t200\t25\n"
        f"{P2}\t(none)\t(none)\t(none)\t0\t0\t0\toff\n"
    )
    ifaces = parse_wg_dump(text, "wg0")
    assert list(ifaces) == ["wg0"]
    wg0 = ifaces["wg0"]
    assert wg0.private_key == Secret(PRIV) and wg0.public_key == PUB
    assert (wg0.listen_port, wg0.fwmark) == (51820, 0)
    assert list(wg0.peers) == [P1, P2]
    p1, p2 = wg0.peers[P1], wg0.peers[P2]
    assert p1.preshared_key == Secret(PSK)
    assert p1.endpoint == "192.0.2.1:51820"
    assert p1.allowed_ips == ("10.0.0.2/32", "fd00::2/128")
    assert p1.latest_handshake == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert (p1.rx_bytes, p1.tx_bytes, p1.persistent_keepalive) == (100, 200, 25)
    assert p2.preshared_key is None and p2.endpoint is None and p2.allowed_ips == ()
    assert p2.latest_handshake is None and p2.persistent_keepalive == 0
    assert p1.provenance["endpoint"] == Source.KERNEL
    assert wg0.provenance["private_key"] == Source.KERNEL


def test_all_dump_several_interfaces_and_fwmark() -> None:
    text = (
        f"wg0\t{PRIV}\t{PUB}\t51820\t0x1337\n"
        f"wg0\t{P1}\t(none)\t[fd00::1]:51820\t10.0.0.2/32\t0\t0\t0\toff\n"
        f"wg1\t(none)\t(none)\t0\toff\n"
    )
    ifaces = parse_wg_dump(text)
    assert list(ifaces) == ["wg0", "wg1"]
    assert ifaces["wg0"].fwmark == 0x1337
    assert ifaces["wg0"].peers[P1].endpoint == "[fd00::1]:51820"
    wg1 = ifaces["wg1"]
    assert wg1.private_key is None and wg1.public_key is None and wg1.peers == {}


@pytest.mark.parametrize(
    "line, reason",
    [
        (f"{P1}\tnot-a-key\t(none)\t(none)\t0\t0\t0\toff", "line 2: preshared key"),
        (f"{P1}\t(none)\t(none)\t(none)\tsoon\t0\t0\toff", "line 2: bad number"),
        ("just\tthree\tcolumns", "line 2: unexpected number of columns"),
    ],
)
def test_bad_line_names_the_line_never_the_key(line: str, reason: str) -> None:
    text = f"{PRIV}\t{PUB}\t51820\toff\n{line}\n"
    with pytest.raises(DumpParseError) as err:
        parse_wg_dump(text, "wg0")
    assert reason in str(err.value)
    assert err.value.interface == "wg0"
    assert PRIV not in str(err.value) and P1 not in str(err.value)


def test_peer_before_interface_line_is_an_error() -> None:
    with pytest.raises(DumpParseError, match="peer line before its interface line"):
        parse_wg_dump(f"wg0\t{P1}\t(none)\t(none)\t(none)\t0\t0\t0\toff\n")


def hexkey(b64: str) -> str:
    return base64.b64decode(b64).hex()


def uapi_reply() -> str:
    """A reply with two peers, device fields and a key wgsyncd does not know."""
    return (
        f"private_key={hexkey(PRIV)}\nlisten_port=51820\nfwmark=7\n"
        f"public_key={hexkey(P1)}\npreshared_key={hexkey(PSK)}\nprotocol_version=1\n"
        "endpoint=[fd00:0:0:0::1]:4242\nlast_handshake_time_sec=1700000000\n"
        "last_handshake_time_nsec=5\ntx_bytes=9\nrx_bytes=8\npersistent_keepalive_interval=25\n"
        "allowed_ip=fd00:0::2/128\nallowed_ip=192.0.2.9/32\n"
        f"public_key={hexkey(P2)}\npreshared_key={'0' * 64}\nprotocol_version=1\n"
        "last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n"
        "persistent_keepalive_interval=0\nsome_future_key=1\n"
        "errno=0\n\n"
    )


@pytest.mark.parametrize("memo", [None, {}], ids=["lines", "blocks"])
def test_uapi_reply(memo: dict | None) -> None:
    iface = (
        parse_uapi("wgx", uapi_reply())
        if memo is None
        else parse_reply("wgx", uapi_reply().encode(), memo, {})
    )
    assert iface.private_key == Secret(PRIV)
    assert iface.public_key == public_key_from_private(Secret(PRIV))
    assert (iface.listen_port, iface.fwmark, iface.implementation) == (51820, 7, "userspace")
    p1, p2 = iface.peers[P1], iface.peers[P2]
    assert p1.endpoint == "[fd00::1]:4242"  # normalised like wg prints it
    assert p1.allowed_ips == ("fd00::2/128", "192.0.2.9/32")
    assert p1.preshared_key == Secret(PSK)
    assert (p1.rx_bytes, p1.tx_bytes, p1.persistent_keepalive) == (8, 9, 25)
    assert p1.latest_handshake == datetime.fromtimestamp(1700000000, UTC)
    assert p2.preshared_key is None and p2.endpoint is None and p2.latest_handshake is None
    assert p2.allowed_ips == ()


def test_uapi_without_private_key_or_port() -> None:
    iface = parse_uapi("wgx", "errno=0\n\n")
    assert iface.private_key is None and iface.public_key is None
    assert (iface.listen_port, iface.fwmark, iface.peers) == (0, 0, {})


@pytest.mark.parametrize(
    "text, reason",
    [
        ("errno=19\n\n", "errno=19 (ENODEV)"),
        ("listen_port=1\n\n", "no errno line"),
        ("hello world\n\n", "line 1: not a key=value line"),
        (f"public_key={hexkey(P1)}\nrx_bytes=lots\nerrno=0\n\n", "line 2: bad value for rx_bytes"),
        (f"public_key={hexkey(P1)}\nallowed_ip=10.0.0.1\nerrno=0\n\n", "line 2: bad value for allowed_ip"),
        (f"private_key={'zz' * 32}\nerrno=0\n\n", "line 1: private_key: not a hex WireGuard key"),
        ("errno=0\nlisten_port=1\n\n", "data after errno line"),
    ],
)
@pytest.mark.parametrize("memo", [None, {}], ids=["lines", "blocks"])
def test_uapi_errors(text: str, reason: str, memo: dict | None) -> None:
    with pytest.raises(InterfaceReadError) as err:
        parse_uapi("wgx", text) if memo is None else parse_reply("wgx", text.encode(), memo, {})
    assert reason in str(err.value)
    assert "zz" * 32 not in str(err.value)


def test_uapi_unchanged_peer_blocks_are_the_same_objects() -> None:
    """A peer whose block did not change is reused (not parsed, and downstream not merged again)."""
    first: dict = {}
    one = parse_reply("wgx", uapi_reply().encode(), {}, first)
    assert len(first) == 2
    second: dict = {}
    moved = uapi_reply().replace("tx_bytes=9\n", "tx_bytes=10\n")  # P1's counters moved
    two = parse_reply("wgx", moved.encode(), first, second)
    assert two.peers[P2] is one.peers[P2]
    assert two.peers[P1] is not one.peers[P1] and two.peers[P1].tx_bytes == 10
    assert two == parse_uapi("wgx", moved)  # equal to a plain parse
    assert len(second) == 2 and len(set(second) - set(first)) == 1  # only P1's block is new
    assert not any(b"public_key" in k or len(k) > 16 for k in second)  # digests, not the blocks


@pytest.mark.parametrize(
    "text",
    [
        f"public_key={hexkey(P1)}\nallowed_ip=10.0.0.1/32\nerrno=0\n\n",  # no device lines
        f"listen_port=7\npublic_key={hexkey(P1)}\npublic_key={hexkey(P2)}\nerrno=0\n\n",
        "listen_port=7\nerrno=0\n\n",  # no peers
    ],
)
def test_uapi_blocks_read_like_lines(text: str) -> None:
    fresh: dict = {}
    assert parse_reply("wgx", text.encode(), {}, fresh) == parse_uapi("wgx", text)
    assert len(fresh) == text.count("public_key=")
