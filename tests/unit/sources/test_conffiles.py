"""Unit tests for the conf-file source: every wg-quick/wg rule on small real files."""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
from pathlib import Path

import pytest

from wgsyncd.config import ConfConfig
from wgsyncd.sources.conffiles import ConfParseError, parse_conf, read
from wgsyncd.state import Secret, Source, SourceResult, public_key_from_private


def key(n: int) -> str:
    """A valid, distinct WireGuard key (any 32 bytes are one)."""
    return base64.b64encode(bytes([n]) * 31 + bytes([n ^ 0x5A])).decode()


def clamped(b64: str) -> str:
    """A private key as wg keeps it (clamped), so the conf's key equals the kernel's."""
    raw = bytearray(base64.b64decode(b64))
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    return base64.b64encode(bytes(raw)).decode()


PRIV = clamped(key(1))
PSK = key(2)
A, B, C = key(10), key(11), key(12)


def parse(text: str, name: str = "wg0"):
    """Parse text as if it were /etc/wireguard/<name>.conf."""
    return parse_conf(text, f"/etc/wireguard/{name}.conf")


def parse_error(text: str, name: str = "wg0") -> ConfParseError:
    """The error parse_conf raises for text; fails the test if it parses."""
    with pytest.raises(ConfParseError) as info:
        parse(text, name)
    return info.value


def write_dir(tmp_path: Path, files: dict[str, str | bytes]) -> ConfConfig:
    """A conf directory with the given files, as a ConfConfig."""
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        (tmp_path / name).write_bytes(data)
    return ConfConfig(directory=str(tmp_path))


FULL = f"""# wg0 on the gateway
[Interface]
PrivateKey = {PRIV}
ListenPort = 51820
FwMark = 0x1f
Address = 10.0.0.1/24, fd00::1/64
Address = 10.1.0.1
DNS = 1.1.1.1, 2606:4700::1 example.com
MTU = 1420
Table = off
PreUp = echo pre
PostUp = iptables -A FORWARD -i %i -j ACCEPT
PostDown = iptables -D FORWARD -i %i -j ACCEPT
SaveConfig = false

[Peer]
PublicKey = {A}
PresharedKey = {PSK}
AllowedIPs = 10.0.0.2/32, fd00::2/128
Endpoint = 192.0.2.2:51820
PersistentKeepalive = 25
"""


# ---------------------------------------------------------------- basic fields


def test_full_interface_fields() -> None:
    iface = parse(FULL)
    assert iface.name == "wg0"
    assert isinstance(iface.private_key, Secret) and iface.private_key.reveal() == PRIV
    assert iface.public_key == public_key_from_private(Secret(PRIV))
    assert iface.listen_port == 51820
    assert iface.fwmark == 0x1F
    assert iface.addresses == ("10.0.0.1/24", "fd00::1/64", "10.1.0.1/32")
    assert iface.dns == ("1.1.1.1", "2606:4700::1", "example.com")
    assert iface.mtu == 1420
    assert iface.table == "off"
    assert iface.pre_up == ("echo pre",)
    assert iface.post_up == ("iptables -A FORWARD -i %i -j ACCEPT",)
    assert iface.pre_down == ()
    assert iface.post_down == ("iptables -D FORWARD -i %i -j ACCEPT",)
    assert iface.save_config is False
    assert iface.conf_path == "/etc/wireguard/wg0.conf"
    assert iface.conf_text is not None and iface.conf_text.reveal() == FULL
    assert iface.comments == ("# wg0 on the gateway",)


def test_full_peer_fields() -> None:
    iface = parse(FULL)
    assert list(iface.peers) == [A]
    peer = iface.peers[A]
    assert peer.public_key == A
    assert peer.preshared_key is not None and peer.preshared_key.reveal() == PSK
    assert peer.allowed_ips == ("10.0.0.2/32", "fd00::2/128")
    assert peer.endpoint == "192.0.2.2:51820"
    assert peer.persistent_keepalive == 25
    assert peer.disabled is False
    assert peer.comments == ()


def test_provenance_covers_every_field_set() -> None:
    iface = parse(FULL)
    for obj in (iface, iface.peers[A]):
        set_fields = {
            name
            for name, value in ((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj))
            if value is not None and name not in ("provenance", "seen_by", "peers", "name")
        }
        if obj is iface:
            set_fields.discard("implementation")
        assert set(obj.provenance) >= set_fields, set_fields - set(obj.provenance)
        assert set(obj.provenance.values()) == {Source.CONF}
    assert "endpoint" in iface.peers[A].provenance
    assert "listen_port" in iface.provenance


def test_absent_values_are_unknown_or_empty() -> None:
    iface = parse(f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {A}\n")
    assert iface.listen_port is None and iface.fwmark is None and iface.mtu is None
    assert iface.addresses == () and iface.post_up == () and iface.save_config is False
    peer = iface.peers[A]
    assert peer.allowed_ips == () and peer.endpoint is None and peer.persistent_keepalive == 0
    assert peer.preshared_key is None and "preshared_key" not in peer.provenance


def test_empty_file_is_an_interface_without_anything() -> None:
    iface = parse("")
    assert iface.peers == {} and iface.private_key is None and iface.public_key is None


# ---------------------------------------------------------------- line rules


def test_postup_keeps_commas_and_each_line_is_one_command() -> None:
    iface = parse(
        "[Interface]\n"
        "PostUp = iptables -A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT\n"
        "PostUp = ip rule add table 200, true\n"
    )
    assert iface.post_up == (
        "iptables -A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT",
        "ip rule add table 200, true",
    )


def test_hash_in_postup_cuts_it_like_wg_quick() -> None:
    iface = parse("[Interface]\nPostUp = echo 'a#b' > /tmp/x\n")
    assert iface.post_up == ("echo 'a",)
    assert iface.comments == ("#b' > /tmp/x",)


def test_percent_i_is_kept_literally() -> None:
    assert parse("[Interface]\nPreDown = logger %i down\n").pre_down == ("logger %i down",)


def test_keys_and_headers_are_case_insensitive() -> None:
    iface = parse(
        f"[INTERFACE]\nprivatekey = {PRIV}\nLISTENPORT = 7\npostup = x\nPOSTUP = y\nsaveconfig = TRUE\n"
        f"[peer]\npublickey = {A}\nallowedips = 10.0.0.2/32\nENDPOINT = 192.0.2.1:1\n"
        "persistentKEEPALIVE = OFF\n"
    )
    assert iface.private_key is not None and iface.listen_port == 7
    assert iface.post_up == ("x", "y") and iface.save_config is True
    assert iface.peers[A].allowed_ips == ("10.0.0.2/32",)
    assert iface.peers[A].endpoint == "192.0.2.1:1"
    assert iface.peers[A].persistent_keepalive == 0


def test_repeated_keys_append_or_last_wins() -> None:
    iface = parse(
        "[Interface]\nListenPort = 1\nListenPort = 2\nMTU = 1400\nMTU = 1380\n"
        "SaveConfig = true\nSaveConfig = false\nTable = 10\nTable = main\n"
        "Address = 10.0.0.1/24\nAddress = 10.0.1.1/24 10.0.2.1/24\nDNS = 9.9.9.9\nDNS = 8.8.8.8,lan\n"
        f"[Peer]\nPublicKey = {A}\nAllowedIPs = 10.0.0.2/32\nAllowedIPs = 10.0.0.3/32,10.0.0.4/32\n"
        "Endpoint = 192.0.2.1:1\nEndpoint = 192.0.2.9:9\nPersistentKeepalive = 5\nPersistentKeepalive = 6\n"
    )
    assert iface.listen_port == 2 and iface.mtu == 1380 and iface.save_config is False
    assert iface.table == "main"
    assert iface.addresses == ("10.0.0.1/24", "10.0.1.1/24", "10.0.2.1/24")
    assert iface.dns == ("9.9.9.9", "8.8.8.8", "lan")
    peer = iface.peers[A]
    assert peer.allowed_ips == ("10.0.0.2/32", "10.0.0.3/32", "10.0.0.4/32")
    assert peer.endpoint == "192.0.2.9:9" and peer.persistent_keepalive == 6


def test_empty_mtu_resets_to_automatic() -> None:
    assert parse("[Interface]\nMTU = 1400\nMTU =\n").mtu is None


def test_no_trailing_newline() -> None:
    iface = parse(f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {A}\nAllowedIPs = 10.0.0.2/32")
    assert iface.peers[A].allowed_ips == ("10.0.0.2/32",)


def test_crlf_line_endings() -> None:
    iface = parse(f"[Interface]\r\nPrivateKey = {PRIV}\r\nPostUp = echo hi\r\n[Peer]\r\nPublicKey = {A}\r\n")
    assert iface.post_up == ("echo hi",) and list(iface.peers) == [A]


def test_split_at_first_equals_keeps_base64_padding() -> None:
    iface = parse(f"[Interface]\nPrivateKey={PRIV}\nPostUp = a=b=c\n")
    assert iface.private_key is not None and iface.private_key.reveal() == PRIV
    assert iface.post_up == ("a=b=c",)


def test_wg_ignores_whitespace_inside_its_values() -> None:
    iface = parse(f"[Peer]\nPublicKey = {A}\nAllowedIPs = 10.0.0.2 / 32 , fd00::2/128\n")
    assert iface.peers[A].allowed_ips == ("10.0.0.2/32", "fd00::2/128")


def test_multiple_interface_sections_merge() -> None:
    iface = parse(f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {A}\n[Interface]\nListenPort = 9\n")
    assert iface.listen_port == 9 and iface.private_key is not None and list(iface.peers) == [A]


def test_peer_order_is_file_order() -> None:
    iface = parse(f"[Peer]\nPublicKey = {C}\n[Peer]\nPublicKey = {A}\n[Peer]\nPublicKey = {B}\n")
    assert list(iface.peers) == [C, A, B]


def test_lines_after_a_blank_line_stay_in_their_section() -> None:
    # wgconfig assigns the second half of such a section to the next peer's line range
    iface = parse(
        f"[Peer]\nPublicKey = {A}\n\nAllowedIPs = 10.0.0.2/32\n# about B\n[Peer]\nPublicKey = {B}\n"
    )
    assert iface.peers[A].allowed_ips == ("10.0.0.2/32",)
    assert iface.peers[B].allowed_ips == ()
    assert iface.peers[B].comments == ("# about B",)


# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("10.0.0.5/24", "10.0.0.0/24"),  # wg masks host bits, `wg show dump` prints the network
        ("10.0.0.7", "10.0.0.7/32"),
        ("fd00:0:0::2:0:0:1/64", "fd00::/64"),
        ("FD00::2", "fd00::2/128"),
        ("::ffff:1.2.3.4/128", "::ffff:1.2.3.4/128"),
        ("::0.1.2.3/128", "::0.1.2.3/128"),  # glibc's inet_ntop, as wg prints it
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("10.0.0.1/024", "10.0.0.0/24"),
    ],
)
def test_allowed_ips_match_wg_show_dump(given: str, expected: str) -> None:
    iface = parse(f"[Peer]\nPublicKey = {A}\nAllowedIPs = {given}\n")
    assert iface.peers[A].allowed_ips == (expected,)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("192.0.2.1:51820", "192.0.2.1:51820"),
        ("[fd00:0:0::1]:51820", "[fd00::1]:51820"),
        ("fd00::1:51820", "[fd00::1]:51820"),  # wg splits at the last colon
        ("vpn.example.com:51820", "vpn.example.com:51820"),
        ("Host-1:1", "Host-1:1"),
    ],
)
def test_endpoint_forms(given: str, expected: str) -> None:
    assert parse(f"[Peer]\nPublicKey = {A}\nEndpoint = {given}\n").peers[A].endpoint == expected


@pytest.mark.parametrize(
    ("given", "expected"), [("off", 0), ("OFF", 0), ("0", 0), ("123", 123), ("010", 10), ("0x1f", 31)]
)
def test_fwmark_forms(given: str, expected: int) -> None:
    assert parse(f"[Interface]\nFwMark = {given}\n").fwmark == expected


def test_keepalive_decimal_with_leading_zero() -> None:
    assert parse(f"[Peer]\nPublicKey = {A}\nPersistentKeepalive = 025\n").peers[A].persistent_keepalive == 25


def test_address_keeps_host_bits() -> None:
    assert parse("[Interface]\nAddress = 10.0.0.1/24,fd00::1:0:0:1/64\n").addresses == (
        "10.0.0.1/24",
        "fd00::1:0:0:1/64",
    )


# ---------------------------------------------------------------- names and comments


def test_name_from_name_key_inside_peer() -> None:
    iface = parse(f"[Peer]\n# name = alice\nPublicKey = {A}\n")
    assert iface.peers[A].name == "alice"
    assert iface.peers[A].comments == ("# name = alice",)


def test_name_from_name_key_right_above_peer() -> None:
    iface = parse(f"[Interface]\nListenPort = 1\n\n# Name = bob laptop\n[Peer]\nPublicKey = {A}\n")
    assert iface.peers[A].name == "bob laptop"
    assert iface.comments == ()


def test_name_from_triple_hash_and_pivpn_markers() -> None:
    iface = parse(
        f"[Interface]\nListenPort = 1\n### begin carol ###\n[Peer]\nPublicKey = {A}\n### end carol ###\n"
        f"### dave\n[Peer]\nPublicKey = {B}\n"
    )
    assert iface.peers[A].name == "carol"
    assert iface.peers[A].comments == ("### begin carol ###", "### end carol ###")
    assert iface.peers[B].name == "dave"
    assert iface.peers[B].comments == ("### dave",)
    assert iface.comments == ()


def test_name_from_plain_comment_directly_above() -> None:
    iface = parse(
        f"[Interface]\nListenPort = 1\n# first note\n# erin's phone\n[Peer]\nPublicKey = {A}\n"
        f"# inside\n\n# detached\n\n[Peer]\nPublicKey = {B}\n"
    )
    assert iface.peers[A].name == "erin's phone"
    assert iface.peers[A].comments == ("# first note", "# erin's phone", "# inside", "# detached")
    assert iface.peers[B].name is None and iface.peers[B].comments == ()


def test_comment_above_with_colon_is_a_name() -> None:
    assert parse(f"# alice: laptop\n[Peer]\nPublicKey = {A}\n").peers[A].name == "alice: laptop"


def test_name_key_beats_comment_above() -> None:
    iface = parse(f"# something else\n[Peer]\n# Name = frank\nPublicKey = {A}\n")
    assert iface.peers[A].name == "frank"


def test_inline_comments_are_kept() -> None:
    iface = parse(f"[Peer]\nPublicKey = {A} # the router\n")
    assert iface.peers[A].comments == ("# the router",)


def test_interface_comments() -> None:
    iface = parse(f"# top\n\n# about the interface\n[Interface]\n# inside\nPrivateKey = {PRIV}\n")
    assert iface.comments == ("# top", "# about the interface", "# inside")


def test_commented_out_keys_are_redacted_in_comments() -> None:
    old = key(99)
    iface = parse(
        f"[Interface]\n# PrivateKey = {old}\nListenPort = 1\n# Private Key: {old}\n"
        f"[Peer]\nPublicKey = {A}\n# presharedkey={old}\n"
    )
    assert iface.comments == ("# PrivateKey = <redacted>",)
    assert iface.peers[A].name is None  # a commented-out setting is not a name
    assert iface.peers[A].comments == ("# Private Key: <redacted>", "# presharedkey=<redacted>")
    assert old not in repr(iface)


def test_bare_keys_in_comments_are_redacted_unless_public() -> None:
    old = key(98)
    iface = parse(f"[Interface]\n# old: {old}\n# peer public key {A}\nListenPort = 1\n")
    assert iface.comments == ("# old: <redacted>", f"# peer public key {A}")


# ---------------------------------------------------------------- disabled peers


def test_disabled_peer_fields_are_parsed() -> None:
    iface = parse(
        f"[Interface]\nPrivateKey = {PRIV}\n\n[Peer]\nPublicKey = {A}\nAllowedIPs = 10.0.0.2/32\n\n"
        f"#! # Name = bob\n#! [Peer]\n#! PublicKey = {B}\n#! PresharedKey = {PSK}\n"
        f"#! AllowedIPs = 10.0.0.3/32, 10.0.0.4/32\n#! Endpoint = 192.0.2.3:5\n"
        f"\n[Peer]\nPublicKey = {C}\n"
    )
    assert list(iface.peers) == [A, B, C]
    bob = iface.peers[B]
    assert bob.disabled is True and bob.name == "bob"
    assert bob.allowed_ips == ("10.0.0.3/32", "10.0.0.4/32")
    assert bob.endpoint == "192.0.2.3:5"
    assert bob.preshared_key is not None and bob.preshared_key.reveal() == PSK
    assert iface.peers[A].disabled is False and iface.peers[C].disabled is False
    assert iface.peers[A].allowed_ips == ("10.0.0.2/32",)


def test_disabled_peer_written_by_wgconfig(tmp_path: Path) -> None:
    import wgconfig

    path = tmp_path / "wg0.conf"
    path.write_text(
        f"[Interface]\nPrivateKey = {PRIV}\n\n[Peer]\nPublicKey = {A}\nAllowedIPs = 10.0.0.2/32\n"
    )
    wc = wgconfig.WGConfig(str(path))
    wc.read_file()
    wc.add_peer(B, "# Name = gina")
    wc.add_attr(B, "AllowedIPs", "10.0.0.3/32")
    wc.disable_peer(A)
    wc.write_file()
    iface = parse_conf(path.read_text(), str(path))
    assert iface.peers[A].disabled is True and iface.peers[A].allowed_ips == ("10.0.0.2/32",)
    assert iface.peers[B].disabled is False and iface.peers[B].name == "gina"


def test_disabled_line_outside_a_disabled_peer_is_a_comment() -> None:
    iface = parse(f"[Peer]\nPublicKey = {A}\n#! AllowedIPs = 10.0.0.9/32\n")
    assert iface.peers[A].allowed_ips == ()
    assert iface.peers[A].comments == ("#! AllowedIPs = 10.0.0.9/32",)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("[Interface]\nPrivateKey = abc=\n", 2, "PrivateKey", "key"),
        (f"[Interface]\nPrivateKey = {PRIV[:-4]}AA=\n", 2, "PrivateKey", "key"),
        (f"[Peer]\nPublicKey = {A}\nPresharedKey = {PSK}x\n", 3, "PresharedKey", "key"),
        ("[Interface]\nListenPort = 1\n[Peers]\n", 3, "[Peers]", "unknown section"),
        ("[Interface]\nListenPort = 1\nnonsense here\n", 3, "[Interface]", "'='"),
        ("[Interface]\nListenPort = fifty\n", 2, "ListenPort", "port"),
        ("[Interface]\nListenPort = 0x10\n", 2, "ListenPort", "port"),
        ("[Interface]\nMTU = 08\n", 2, "MTU", "MTU"),
        (f"[Peer]\nPublic\u212aey = {A}\n", 2, "key", "unknown [Peer] key"),  # Kelvin sign is not k to wg
        (f"[Peer]\nPublicKey\u00a0= {A}\n", 2, "key", "unknown [Peer] key"),  # nor a no-break space a space
        ("[Interface]\nSaveConfig\n", 2, "SaveConfig", "true or false"),
        ("[Interface]\nMTU = big\n", 2, "MTU", "MTU"),
        (f"[Peer]\nPublicKey = {A}\nPersistentKeepalive = soon\n", 3, "PersistentKeepalive", "seconds"),
        (f"[Peer]\nPublicKey = {A}\nPersistentKeepalive = 65536\n", 3, "PersistentKeepalive", "seconds"),
        ("[Interface]\nFwMark = 0X1f\n", 2, "FwMark", "hex"),
        ("[Interface]\nSaveConfig = yes\n", 2, "SaveConfig", "true or false"),
        ("[Interface]\nAddress = 10.0.0.300/24\n", 2, "Address", "IP"),
        ("[Interface]\nListenPort =\n", 2, "ListenPort", "empty"),
        (f"[Peer]\nPublicKey = {A}\nAllowedIPs = 10.0.0.2/32,\n", 3, "AllowedIPs", "empty entry"),
        (f"[Peer]\nPublicKey = {A}\nAllowedIPs = 10.0.0.2/33\n", 3, "AllowedIPs", "prefix"),
        (f"[Peer]\nPublicKey = {A}\nEndpoint = 192.0.2.1\n", 3, "Endpoint", "port"),
        (f"[Peer]\nPublicKey = {A}\nEndpoint = [fd00::1:51820\n", 3, "Endpoint", "port"),
        ("[Peer]\nAllowedIPs = 10.0.0.2/32\n", 1, "PublicKey", "no PublicKey"),
        ("ListenPort = 1\n[Interface]\n", 1, "ListenPort", "before any"),
        ("[Interface]\nPublicKey = x\n", 2, "PublicKey", "unknown [Interface] key"),
        (f"[Peer]\nPublicKey = {A}\nAddress = 10.0.0.2/32\n", 3, "Address", "unknown [Peer] key"),
        ("\ufeff[Interface]\n", 1, "encoding", "byte order mark"),
    ],
)
def test_errors_name_file_line_field(text: str, line: int, field: str, words: str) -> None:
    err = parse_error(text)
    assert err.where == f"/etc/wireguard/wg0.conf:{line} {field}"
    assert words in err.message


def test_file_wgconfig_cannot_parse_is_read_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    text = f"[Interface]\nListenPort = 1\n#! [Foo]\n#! PublicKey = {A}\n[ Peer ]\nPublicKey = {B}\n"
    with caplog.at_level(logging.WARNING, logger="wgsyncd.sources.conffiles"):
        iface = parse(text)
    assert list(iface.peers) == [B]
    assert iface.peers[B].comments == ("#! [Foo]", "#! PublicKey = " + A)
    assert "/etc/wireguard/wg0.conf:3: wgconfig cannot parse" in caplog.text


def test_wg_whitespace_rules_for_keys_and_headers() -> None:
    iface = parse(f"[Interface]\nListen Port = 5\n[ Peer ]\nPublic Key = {A}\nAllowed IPs = 10.0.0.2/32\n")
    assert iface.listen_port == 5 and iface.peers[A].allowed_ips == ("10.0.0.2/32",)
    err = parse_error("[ Interface ]\nAddress = 10.0.0.1/24\n")  # wg-quick does not consume it, wg refuses
    assert err.where.endswith(":2 Address") and "exactly [Interface]" in err.message
    assert parse_error("[Interface]\nPost Up = x\n").where.endswith(":2 Post Up")


def test_unknown_key_that_looks_like_a_key_is_not_echoed() -> None:
    # a pasted private key line "abc...=" splits into a "key" that is the secret minus "="
    secret = key(77)
    err = parse_error(f"[Interface]\n{secret}\n")
    assert err.where == "/etc/wireguard/wg0.conf:2 key"
    assert secret.rstrip("=") not in str(err)


def test_bad_file_gives_one_error_and_no_interface(tmp_path: Path) -> None:
    cfg = write_dir(
        tmp_path,
        {
            "good.conf": FULL,
            "bad.conf": f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {A}\n"
            "PersistentKeepalive = x\n",
        },
    )
    result = read(cfg)
    assert result.available and list(result.interfaces) == ["good"]
    assert [(e.source, e.interface, e.where) for e in result.errors] == [
        (Source.CONF, "bad", f"{tmp_path}/bad.conf:5 PersistentKeepalive"),
    ]


def test_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "dir.conf").mkdir()
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.conf")
    os.mkfifo(tmp_path / "fifo.conf")
    result = read(ConfConfig(directory=str(tmp_path)))
    assert result.interfaces == {}
    by_if = {e.interface: e for e in result.errors}
    assert set(by_if) == {"dir", "dangling", "fifo"}
    assert by_if["dir"].where == f"{tmp_path}/dir.conf" and "regular" in by_if["dir"].message
    assert "No such file" in by_if["dangling"].message
    assert "regular" in by_if["fifo"].message


def test_secrets_never_in_errors_or_result_repr(tmp_path: Path) -> None:
    bad_psk = PSK[:-2] + "A="  # still 32 bytes: valid, stays secret
    files = {
        "a.conf": f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {A}\nPresharedKey = {bad_psk}\n"
        "AllowedIPs = bogus\n",
        "b.conf": f"[Interface]\nPrivateKey = {PRIV}x\n",
        "c.conf": f"[Interface]\nPrivateKey = {PRIV}\nListenPort = {PRIV}\n",
        "d.conf": f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {A}\nPresharedKey = {PSK}\n",
        "e.conf": f"[Interface]\n{PRIV[:-1]}\n",
    }
    result = read(write_dir(tmp_path, files))
    assert list(result.interfaces) == ["d"] and len(result.errors) == 4
    text = repr(result) + "".join(str(e) + repr(e) for e in result.errors)
    for secret in (PRIV, PSK, bad_psk, PRIV[:-1], PRIV.rstrip("=")):
        assert secret not in text


# ---------------------------------------------------------------- read()


def test_missing_directory_is_unavailable(tmp_path: Path) -> None:
    result = read(ConfConfig(directory=str(tmp_path / "nope")))
    assert result == SourceResult(source=Source.CONF, available=False)


def test_disabled_source_is_unavailable(tmp_path: Path) -> None:
    result = read(ConfConfig(enabled=False, directory=str(write_dir(tmp_path, {"wg0.conf": FULL}).directory)))
    assert result.available is False and result.interfaces == {}


def test_directory_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    result = read(ConfConfig(directory=str(tmp_path / "f")))
    assert result.interfaces == {} and len(result.errors) == 1
    assert result.errors[0].interface is None and result.errors[0].where == str(tmp_path / "f")


def test_file_names_follow_wg_quick(tmp_path: Path) -> None:
    cfg = write_dir(
        tmp_path,
        {
            "wg0.conf": FULL,
            "a_b=c+d.e-f.conf": FULL,
            "sixteen-chars-xx.conf": FULL,
            "has space.conf": FULL,
            "wg1.conf.bak": FULL,
            "notes.txt": "x",
        },
    )
    result = read(cfg)
    assert list(result.interfaces) == ["a_b=c+d.e-f", "wg0"]
    assert result.errors == []
    assert result.interfaces["wg0"].conf_path == f"{tmp_path}/wg0.conf"


def test_want_skips_without_reading(tmp_path: Path) -> None:
    cfg = write_dir(tmp_path, {"wg0.conf": FULL, "wg1.conf": "broken\n", "wg2.conf": FULL})
    asked: list[str] = []

    def want(name: str) -> bool:
        asked.append(name)
        return name != "wg1"

    result = read(cfg, want)
    assert asked == ["wg0", "wg1", "wg2"]
    assert list(result.interfaces) == ["wg0", "wg2"] and result.errors == []


def test_conf_text_is_the_exact_file(tmp_path: Path) -> None:
    raw = "  # odd spacing \r\n[Interface]\r\n\tListenPort=1  \n\n\n"
    cfg = write_dir(tmp_path, {"wg0.conf": raw})
    iface = read(cfg).interfaces["wg0"]
    assert iface.conf_text is not None and iface.conf_text.reveal() == raw


def test_parse_time_of_10000_peers() -> None:
    import time

    lines = [f"[Interface]\nPrivateKey = {PRIV}\nListenPort = 51820\n"]
    for i in range(10000):
        pk = base64.b64encode(i.to_bytes(4, "big") * 8).decode()
        lines.append(
            f"\n# peer {i}\n[Peer]\nPublicKey = {pk}\n"
            f"AllowedIPs = 10.{i >> 8}.{i & 255}.1/32, fd00::{i:x}/128\n"
            f"Endpoint = 192.0.2.{i % 250 + 1}:{1024 + i}\nPersistentKeepalive = 25\n"
        )
    text = "".join(lines)
    start = time.perf_counter()
    iface = parse(text)
    elapsed = time.perf_counter() - start
    print(f"\nparse_conf: 10,000 peers, {len(text)} bytes in {elapsed:.3f} s")
    assert len(iface.peers) == 10000


def test_unchanged_file_is_not_parsed_again_but_a_same_size_same_mtime_edit_is(tmp_path: Path) -> None:
    cfg = write_dir(tmp_path, {"wg0.conf": FULL})
    memo: dict = {}  # the daemon's memo.Memo.conf
    first = read(cfg, None, memo).interfaces["wg0"]
    assert read(cfg, None, memo).interfaces["wg0"] is first  # same bytes: the cached parse
    path = tmp_path / "wg0.conf"
    st = path.stat()
    edited = FULL.replace("MTU = 1420", "MTU = 1380")
    assert len(edited) == len(FULL) and edited != FULL
    path.write_text(edited)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # an edit mtime alone would miss
    again = read(cfg, None, memo).interfaces["wg0"]
    assert again is not first and again.mtu == 1380
    path.unlink()
    assert read(cfg).interfaces == {}


def test_conf_parse_cache_forgets_a_deleted_file_whatever_the_directory_spelling(tmp_path: Path) -> None:
    """The cache holds each file's raw text (private key inside): a deleted file must leave it."""
    from wgsyncd.config import ConfConfig
    from wgsyncd.sources import conffiles

    conf = tmp_path / "wg7.conf"
    conf.write_text(f"[Interface]\nPrivateKey = {PRIV}\n")
    for directory in (f"{tmp_path}/", f"{tmp_path}//", str(tmp_path / ".")):
        cfg = ConfConfig(directory=directory)
        parsed: dict = {}  # the daemon's memo.Memo.conf
        assert list(conffiles.read(cfg, None, parsed).interfaces) == ["wg7"]
        assert any(p.endswith("wg7.conf") for p in parsed)
        conf.rename(tmp_path / "wg7.conf.bak")
        assert conffiles.read(cfg, None, parsed).interfaces == {}
        assert not any(p.endswith("wg7.conf") for p in parsed), directory
        (tmp_path / "wg7.conf.bak").rename(conf)
