"""Issue 16 item 9: files wg-quick runs are read, the way wg-quick, wg and ip read them.

Every expectation here was measured with the real tools (wg setconf on wireguard-go +
``wg show dump``, ``ip address add``/``ip link set mtu`` in a namespace, wg-quick's
parse_options); tests/test_conffiles_oracle.py checks the same files against them live.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from tests.unit.sources.test_conffiles import PRIV, PSK, A, B, C, parse
from wgsyncd.config import ConfConfig
from wgsyncd.sources.conffiles import read
from wgsyncd.state import Secret, public_key_from_private

ZERO = base64.b64encode(bytes(32)).decode()
OWN = public_key_from_private(Secret(PRIV))


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.fixture
def warned(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="wgsyncd.sources.conffiles")
    return caplog


def test_disabled_block_with_a_placeholder_key_is_a_warning_not_an_error(warned) -> None:
    iface = parse(
        f"[Interface]\nPrivateKey = {PRIV}\n#! [Peer]\n#! PublicKey = <paste key here>\n"
        f"#! AllowedIPs = 10.0.0.9/33\n\n[Peer]\nPublicKey = {A}\n"
    )
    assert list(iface.peers) == [A]
    (msg,) = warnings(warned)
    assert msg.startswith("/etc/wireguard/wg0.conf:4 PublicKey: disabled peer not read")
    assert "paste" not in msg


def test_disabled_copy_of_a_live_peer_leaves_the_live_peer(warned) -> None:
    for text in (
        f"[Peer]\nPublicKey = {A}\nAllowedIPs = 10.0.0.1/32\n#! [Peer]\n#! PublicKey = {A}\n",
        f"#! [Peer]\n#! PublicKey = {A}\n\n[Peer]\nPublicKey = {A}\nAllowedIPs = 10.0.0.1/32\n",
    ):
        peer = parse(text).peers[A]
        assert peer.disabled is False and peer.allowed_ips == ("10.0.0.1/32",)
    assert all("disabled copy of a live peer" in m for m in warnings(warned))


def test_repeated_public_key_merges_like_wg_setconf(warned) -> None:
    # measured: the later block's endpoint and allowed IPs (replaced, even by none),
    # earlier values the later block does not set (keepalive, psk) stay
    iface = parse(
        f"[Peer]\nPublicKey = {A}\nPresharedKey = {PSK}\nAllowedIPs = 10.0.0.1/32\n"
        f"Endpoint = 192.0.2.1:1\nPersistentKeepalive = 5\n"
        f"[Peer]\nPublicKey = {B}\n"
        f"[Peer]\n# Name = again\nPublicKey = {A}\nAllowedIPs = 10.0.0.2/32\nEndpoint = 192.0.2.2:2\n"
    )
    assert list(iface.peers) == [A, B]
    peer = iface.peers[A]
    assert peer.allowed_ips == ("10.0.0.2/32",) and peer.endpoint == "192.0.2.2:2"
    assert peer.persistent_keepalive == 5 and peer.preshared_key == Secret(PSK)
    assert peer.name == "again"
    assert warnings(warned) == [
        "/etc/wireguard/wg0.conf:9 PublicKey: same peer as an earlier [Peer]; wg merges them "
        "(this block's values win)"
    ]
    cleared = parse(f"[Peer]\nPublicKey = {A}\nAllowedIPs = 10.0.0.1/32\n[Peer]\nPublicKey = {A}\n")
    assert cleared.peers[A].allowed_ips == ()
    zeroed = parse(
        f"[Peer]\nPublicKey = {A}\nPresharedKey = {PSK}\n[Peer]\nPublicKey = {A}\nPresharedKey = {ZERO}\n"
    )
    assert zeroed.peers[A].preshared_key is None


@pytest.mark.parametrize(
    ("port", "expected"),
    [("+51820", 51820), ("https", 443), ("70000", 4464), ("010", 10), ("65536", 0), ("4294967297", 1)],
)
def test_ports_as_getaddrinfo_reads_them(port: str, expected: int) -> None:
    assert parse(f"[Interface]\nListenPort = {port}\n").listen_port == expected
    peer = parse(f"[Peer]\nPublicKey = {A}\nEndpoint = 192.0.2.1:{port}\n").peers[A]
    assert peer.endpoint == f"192.0.2.1:{expected}"


@pytest.mark.parametrize(
    ("host", "expected"), [("10.1", "10.0.0.1"), ("010.0.0.1", "8.0.0.1"), ("0xc0.0.2.1", "192.0.2.1")]
)
def test_endpoint_ipv4_host_as_getaddrinfo_reads_it(host: str, expected: str) -> None:
    assert parse(f"[Peer]\nPublicKey = {A}\nEndpoint = {host}:5\n").peers[A].endpoint == f"{expected}:5"


@pytest.mark.parametrize(
    ("mtu", "expected"), [("0x500", 1280), ("01420", 784), ("+1400", 1400), ("1420", 1420)]
)
def test_mtu_as_ip_reads_it(mtu: str, expected: int) -> None:
    assert parse(f"[Interface]\nMTU = {mtu}\n").mtu == expected


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.0.0.01/32", "10.0.0.1/32"),
        ("010.0.0.1/32", "8.0.0.1/32"),
        ("10.1/16", "10.1.0.0/16"),
        ("10.0.0.3/255.255.255.0", "10.0.0.3/24"),
        ("10.0.0.4/024", "10.0.0.4/20"),
        ("fd00::01/0x40", "fd00::1/64"),
    ],
)
def test_address_as_ip_reads_it(address: str, expected: str) -> None:
    assert parse(f"[Interface]\nAddress = {address}\n").addresses == (expected,)


def test_bare_table_and_dns_lines_are_read_as_wg_quick_reads_them(warned) -> None:
    iface = parse("[Interface]\nTable\nDNS\n")
    assert iface.table == "Table" and iface.dns == ("DNS",)
    assert len(warnings(warned)) == 2 and "no '='" in warnings(warned)[0]


def test_latin1_byte_in_a_comment_is_read_with_a_warning(tmp_path: Path, warned) -> None:
    (tmp_path / "wg0.conf").write_bytes(b"[Interface]\nListenPort = 5\n# caf\xe9\n")
    result = read(ConfConfig(directory=str(tmp_path)))
    assert not result.errors and result.interfaces["wg0"].listen_port == 5
    assert result.interfaces["wg0"].comments == ("# caf\u00e9",)
    assert any(
        m.endswith(":3 encoding: not valid UTF-8 (wg-quick runs it); stray bytes read as Latin-1")
        for m in warnings(warned)
    )


def test_peer_with_the_interfaces_own_key_is_dropped(warned) -> None:
    iface = parse(
        f"[Peer]\nPublicKey = {OWN}\nAllowedIPs = 10.0.0.1/32\n"
        f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {A}\n"
    )
    assert list(iface.peers) == [A]
    assert "own public key" in warnings(warned)[0]


def test_same_prefix_in_two_peers_stays_with_the_last(warned) -> None:
    iface = parse(
        f"[Peer]\nPublicKey = {A}\nAllowedIPs = 10.0.0.5/24, 10.0.1.0/24\n"
        f"[Peer]\nPublicKey = {B}\nAllowedIPs = 10.0.0.9/24\n"
        f"[Peer]\nPublicKey = {C}\nAllowedIPs = 10.0.2.1/32, 10.0.2.2/32, 10.0.2.1/32\n"
    )
    assert iface.peers[A].allowed_ips == ("10.0.1.0/24",)
    assert iface.peers[B].allowed_ips == ("10.0.0.0/24",)
    assert iface.peers[C].allowed_ips == ("10.0.2.2/32", "10.0.2.1/32")  # wg moves a repeat to the end
    assert warnings(warned) == [
        "/etc/wireguard/wg0.conf:6 AllowedIPs: prefix also in an earlier peer; wg gives it to this one only"
    ]


def test_all_zero_keys_are_none_and_private_keys_are_clamped() -> None:
    assert parse(f"[Interface]\nPrivateKey = {ZERO}\n").private_key is None
    assert parse(f"[Peer]\nPublicKey = {A}\nPresharedKey = {ZERO}\n").peers[A].preshared_key is None
    unclamped = base64.b64encode(bytes([255]) * 32).decode()
    iface = parse(f"[Interface]\nPrivateKey = {unclamped}\n")
    assert iface.private_key == Secret(
        "+P///////////////////////////////////////38="
    )  # `wg show` printed this
    assert iface.public_key == "hHwNLDdSNPNl5mCVUYejc1oPdhPRYJ06ak2MU66qWiI="


def test_whitespace_and_case_are_ascii_only() -> None:
    vt = parse(f"[Peer]\nPublicKey\v= {A}\n\vAllowed\fIPs = 10.0.0.1/32\r\n")
    assert vt.peers[A].allowed_ips == ("10.0.0.1/32",)
    # a no-break space inside a DNS value is not a separator to bash, nor a space to trim;
    # wg-quick would hand "a\u00a0b" to resolvconf, but restore refuses it: the file is refused
    from tests.unit.sources.test_conffiles import parse_error
    from wgsyncd.wire import confvalues as cv

    assert cv.ifs_split("a\u00a0b  c") == ["a\u00a0b", "c"]
    assert parse_error("[Interface]\nDNS = a\u00a0b, c\n").where.endswith(":2 DNS")
    assert parse("[Interface]\nPostUp = echo x\u00a0\n").post_up == ("echo x\u00a0",)


def test_only_the_last_mtu_reaches_ip() -> None:
    # found by the conf fuzzer: wg-quick keeps MTU as text, last wins, and only that goes to ip
    assert parse("[Interface]\nMTU = 08\nMTU = 1280\n").mtu == 1280
    assert parse("[Interface]\nMTU = 1280\nMTU =\n").mtu is None


def test_an_address_ip_would_refuse_twice_is_an_error() -> None:
    # measured with ip: IPv4 refuses the same address/prefix (however spelled), IPv6 the same address
    from tests.unit.sources.test_conffiles import parse_error

    assert "twice" in parse_error("[Interface]\nAddress = 10.0.0.1/24\nAddress = 10.0.0.01/24\n").message
    assert parse_error("[Interface]\nAddress = fd00::1/64, fd00::1/128\n").where.endswith(":2 Address")
    assert parse("[Interface]\nAddress = 10.0.0.1/24, 10.0.0.1/32\n").addresses == (
        "10.0.0.1/24",
        "10.0.0.1/32",
    )
