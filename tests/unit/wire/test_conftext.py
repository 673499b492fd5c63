"""wire/conftext.py: the conf format's one home, read and written by the same module.

The rules themselves are tested file by file in tests/unit/test_conffiles*.py and
against the real tools in tests/test_conffiles_*oracle.py; here what is the
module's own: writing reads back, and a parse leaves the process as it found it.
"""

from __future__ import annotations

import base64
import gc
import os

import pytest

from wgsyncd.state import Interface, Peer, Secret, Source
from wgsyncd.wire import conftext
from wgsyncd.wire.conftext import ZERO_KEY_B64, ConfParseError, parse_conf, render_conf, render_running


def key() -> str:
    raw = bytearray(os.urandom(32))
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    return base64.b64encode(bytes(raw)).decode()


def interface(peers: int = 3) -> Interface:
    """An interface with every kind of value the writer writes: hooks with commas, names, a disabled peer."""
    out: dict[str, Peer] = {}
    for i in range(peers):
        pub = key()
        out[pub] = Peer(
            public_key=pub,
            preshared_key=Secret(key()) if i % 2 == 0 else None,
            allowed_ips=(f"10.0.{i // 250}.{i % 250 + 2}/32", f"fd00::{i + 2:x}/128"),
            endpoint=f"[2001:db8::{i + 1:x}]:{20000 + i}" if i % 3 else f"203.0.113.{i % 250 + 1}:51820",
            persistent_keepalive=25 if i == 0 else 0,
            name=f"peer {i}",
            comments=("# a note",) if i == 0 else (),
            disabled=i == peers - 1,
        )
    return Interface(
        name="wg0",
        private_key=Secret(key()),
        listen_port=51820,
        fwmark=0x1F,
        addresses=("10.0.0.1/24",),
        dns=("192.0.2.53", "corp.example"),
        mtu=1420,
        table="off",
        post_up=("iptables -A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT",),
        comments=("# office VPN",),
        peers=out,
    )


def test_written_conf_reads_back_with_every_value() -> None:
    iface = interface(300)
    back = parse_conf(render_conf(iface), "/etc/wireguard/wg0.conf")
    assert back.private_key == iface.private_key and back.listen_port == 51820 and back.fwmark == 0x1F
    assert (back.addresses, back.dns, back.mtu, back.table) == (iface.addresses, iface.dns, 1420, "off")
    assert back.post_up == iface.post_up and back.comments == ("# office VPN",)
    assert list(back.peers) == list(iface.peers)
    for pub, peer in iface.peers.items():
        got = back.peers[pub]
        assert (got.preshared_key, got.allowed_ips, got.endpoint) == (
            peer.preshared_key,
            peer.allowed_ips,
            peer.endpoint,
        )
        assert (got.persistent_keepalive, got.name, got.disabled) == (
            peer.persistent_keepalive,
            peer.name,
            peer.disabled,
        )
        assert got.provenance["public_key"] is Source.CONF


def test_running_file_has_the_enabled_peers_given_and_spells_off() -> None:
    iface = interface(3)
    peers = [p for p in iface.peers.values() if not p.disabled]
    text = render_running(iface, peers, spell_off=True)
    assert text.startswith("[Interface]\nPrivateKey = ") and "Address" not in text and "PostUp" not in text
    assert text.count("[Peer]") == 2
    assert f"PresharedKey = {ZERO_KEY_B64}" in text and "PersistentKeepalive = 0" in text
    plain = render_running(iface, peers, spell_off=False)
    assert ZERO_KEY_B64 not in plain and "PersistentKeepalive = 0" not in plain
    back = parse_conf(plain, "/run/x/wg0.conf")
    assert list(back.peers) == [p.public_key for p in peers]


@pytest.mark.parametrize("enabled", [True, False])
def test_a_parse_leaves_the_garbage_collector_as_it_was(enabled: bool) -> None:
    """The collector is paused during a parse only: after it, and after a refused file too."""
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        seen = []
        real = conftext.read_blocks

        def spy(text: str, path: str):  # type: ignore[no-untyped-def]
            seen.append(gc.isenabled())
            return real(text, path)

        conftext.read_blocks = spy  # type: ignore[assignment]
        try:
            parse_conf("[Interface]\nListenPort = 1\n", "/etc/wireguard/wg0.conf")
            with pytest.raises(ConfParseError):
                parse_conf("[Interface]\nListenPort = x\n", "/etc/wireguard/wg0.conf")
        finally:
            conftext.read_blocks = real  # type: ignore[assignment]
        assert seen == [False, False]
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()


def test_prefix_moves_to_its_last_peer_across_many_peers() -> None:
    """wg's rule at scale: every peer claims 10.9.0.1/32, only the last keeps it (and order stays)."""
    keys = [key() for _ in range(2000)]
    text = "[Interface]\nListenPort = 1\n" + "".join(
        f"[Peer]\nPublicKey = {k}\nAllowedIPs = 10.9.0.1/32, 10.8.{i // 250}.{i % 250}/32\n"
        for i, k in enumerate(keys)
    )
    iface = parse_conf(text, "/etc/wireguard/wg0.conf")
    assert list(iface.peers) == keys
    assert iface.peers[keys[-1]].allowed_ips == ("10.9.0.1/32", "10.8.7.249/32")
    assert all(len(iface.peers[k].allowed_ips) == 1 for k in keys[:-1])
