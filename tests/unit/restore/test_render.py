"""Pure parts of restore and config versions: rendering, diffs, the UAPI request, content hashing."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime

import pytest

from wgsyncd import restore
from wgsyncd.canonical import signed_joined
from wgsyncd.sources.conffiles import parse_conf
from wgsyncd.state import HostState, Interface, Peer, Secret, Source, SourceError, public_key_from_private
from wgsyncd.store import versions


def key() -> str:
    """A random key, clamped: a private key reads back from a conf as wg keeps it (clamped)."""
    raw = bytearray(os.urandom(32))
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    return base64.b64encode(bytes(raw)).decode()


def sample() -> Interface:
    priv = key()
    iface = Interface(
        name="wg0",
        private_key=Secret(priv),
        public_key=public_key_from_private(Secret(priv)),
        listen_port=51820,
        fwmark=0x1234,
        addresses=("10.0.0.1/24", "fd00::1/64"),
        dns=("192.0.2.53", "corp.example"),
        mtu=1420,
        table="off",
        pre_up=("echo a, b",),
        post_up=("iptables -A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT", "true"),
        post_down=("true",),
        comments=("# office VPN",),
    )
    for i, (name, disabled) in enumerate([("alice", False), ("bob", False), ("carol", True)]):
        pub = key()
        iface.peers[pub] = Peer(
            public_key=pub,
            preshared_key=Secret(key()) if i != 1 else None,
            allowed_ips=(f"10.0.0.{i + 2}/32", f"fd00::{i + 2}/128"),
            endpoint=f"203.0.113.{i + 1}:5182{i}" if i != 1 else None,
            persistent_keepalive=25 if i == 0 else 0,
            name=name,
            comments=("# some note",) if i == 0 else (),
            disabled=disabled,
        )
    return iface


def test_rendered_conf_reads_back_as_the_same_interface():
    iface = sample()
    text = restore.render_conf(iface)
    back = parse_conf(text, "/etc/wireguard/wg0.conf")
    for f in ("listen_port", "fwmark", "addresses", "dns", "mtu", "table", "pre_up", "post_up", "post_down"):
        assert getattr(back, f) == getattr(iface, f), f
    assert back.private_key.reveal() == iface.private_key.reveal()
    assert list(back.peers) == list(iface.peers)  # order kept
    for pub, want in iface.peers.items():
        got = back.peers[pub]
        assert (got.name, got.disabled) == (want.name, want.disabled)
        assert got.allowed_ips == want.allowed_ips and got.endpoint == want.endpoint
        assert (got.persistent_keepalive or 0) == (want.persistent_keepalive or 0)
        assert restore._fp(got.preshared_key) == restore._fp(want.preshared_key)
    assert "# some note" in back.peers[next(iter(iface.peers))].comments
    assert "# office VPN" in back.comments


def test_setconf_has_only_running_peers_and_wg_keys():
    iface = sample()
    text = restore.render_setconf(iface)
    assert "Address" not in text and "PostUp" not in text and "#!" not in text
    disabled = next(p for p in iface.peers.values() if p.disabled)
    assert disabled.public_key not in text
    assert text.count("[Peer]") == 2 and "FwMark = 0x1234" in text


def test_render_without_private_key_says_so():
    iface = sample()
    iface.private_key = None
    text = restore.render_conf(iface)
    assert "PrivateKey =" not in text and "# PrivateKey was not stored" in text


def test_redacted_lines_hide_keys_but_show_change():
    a, b = key(), key()
    ra, rb = restore.redact_conf_line(f"PrivateKey = {a}\n"), restore.redact_conf_line(f"PrivateKey = {b}\n")
    assert a not in ra and ra.startswith("PrivateKey = <secret fp:") and ra != rb
    assert a not in restore.redact_conf_line(f"#! PresharedKey={a}")
    assert restore.redact_conf_line(f"PublicKey = {a}") == f"PublicKey = {a}"


def test_diff_and_uapi_request():
    desired = sample()
    current = Interface(name="wg0", public_key=key(), listen_port=51820, fwmark=0)
    pubs = list(desired.peers)
    stale = key()
    current.peers[stale] = Peer(public_key=stale, allowed_ips=("10.9.9.9/32",))
    same = desired.peers[pubs[1]]
    current.peers[pubs[1]] = Peer(public_key=pubs[1], allowed_ips=tuple(reversed(same.allowed_ips)))
    ch = restore.diff_interface(current, desired, "uapi")
    assert ch.device == ("private_key", "fwmark")
    acts = {(c.public_key, c.action) for c in ch.peers}
    assert acts == {(stale, "remove"), (pubs[0], "add")}  # pubs[1] equal as a set; pubs[2] disabled
    req = restore.uapi_set_request(desired, ch, "test").decode()
    lines = req.split("\n")
    assert lines[0] == "set=1" and req.endswith("\n\n")
    assert lines.index(f"public_key={base64.b64decode(stale).hex()}") < lines.index(
        f"public_key={base64.b64decode(pubs[0]).hex()}"
    )  # removals first
    assert "remove=true" in lines and "replace_allowed_ips=true" in lines
    assert f"private_key={base64.b64decode(desired.private_key.reveal()).hex()}" in lines
    assert "fwmark=4660" in lines and "endpoint=203.0.113.1:51820" in lines


def test_update_clears_a_preshared_key_the_version_does_not_have():
    desired = sample()
    pub = list(desired.peers)[1]  # no psk in the version
    current = Interface(name="wg0", public_key=desired.public_key, listen_port=51820, fwmark=0x1234)
    for k, p in desired.peers.items():
        if not p.disabled:
            current.peers[k] = Peer(public_key=k, allowed_ips=p.allowed_ips, endpoint=p.endpoint,
                                    persistent_keepalive=p.persistent_keepalive,
                                    preshared_key=p.preshared_key)  # fmt: skip
    current.peers[pub].preshared_key = Secret(key())
    ch = restore.diff_interface(current, desired, "uapi")
    assert [(c.action, c.fields) for c in ch.peers] == [("update", ("preshared_key",))]
    assert f"preshared_key={'0' * 64}" in restore.uapi_set_request(desired, ch, "t").decode()


def test_resolve_endpoint_forms():
    assert restore.resolve_endpoint("[fd00:0::1]:51820", "t") == "[fd00::1]:51820"
    assert restore.resolve_endpoint("192.0.2.1:1", "t") == "192.0.2.1:1"
    assert restore.resolve_endpoint("localhost:51820", "t") in ("127.0.0.1:51820", "[::1]:51820")


def test_parse_time_defaults_to_utc_and_refuses_garbage():
    assert restore.parse_time("2025-01-02T03:04:05").tzinfo == UTC
    assert restore.parse_time("2025-01-02T03:04:05Z") == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    with pytest.raises(restore.RestoreError, match="not an ISO 8601 time"):
        restore.parse_time("yesterday")


# ---------------------------------------------------------------- version content


def state_of(*ifaces: Interface, errors: list[SourceError] | None = None) -> HostState:
    st = HostState("h", "h", datetime.now(UTC), {i.name: i for i in ifaces}, errors=errors or [])
    st.sources = {Source.KERNEL: True, Source.CONF: not errors}
    return st


def test_content_hash_ignores_peer_order_and_kernel_endpoints_but_not_secrets():
    iface = sample()
    for p in iface.peers.values():
        p.provenance["endpoint"] = Source.KERNEL
    base = versions.build_content(state_of(iface), None, None)
    iface.peers = dict(reversed(list(iface.peers.items())))
    assert versions.build_content(state_of(iface), None, None).sha256 == base.sha256
    next(iter(iface.peers.values())).endpoint = "198.51.100.7:9"  # roamed
    assert versions.build_content(state_of(iface), None, None).sha256 == base.sha256
    next(iter(iface.peers.values())).preshared_key = Secret(key())  # a secret changed
    assert versions.build_content(state_of(iface), None, None).sha256 != base.sha256


def test_doc_holds_no_secret_and_recovery_key_changes_the_hash():
    iface = sample()
    recovery = key()
    content = versions.build_content(state_of(iface), recovery, None)
    text = signed_joined(content.doc).decode()
    assert iface.private_key.reveal() not in text
    assert all(p.preshared_key.reveal() not in text for p in iface.peers.values() if p.preshared_key)
    assert content.doc["interfaces"]["wg0"]["secrets"]["sealed_to"] is not None
    assert versions.build_content(state_of(iface), None, None).sha256 != content.sha256


def test_incomplete_interface_carries_the_previous_version_forward():
    a, b = sample(), sample()
    b.name = "wg1"
    first = versions.build_content(state_of(a, b), None, None)
    # wg1's conf failed this cycle and it came back half-read: the previous content is kept
    half = Interface(name="wg1", listen_port=1)
    err = SourceError(Source.CONF, "/etc/wireguard/wg1.conf", "bad line", interface="wg1")
    again = versions.build_content(state_of(a, half, errors=[err]), None, first.doc)
    assert again.sha256 == first.sha256 and "wg1" not in again.fresh
    # missing entirely while a source failed: still kept
    whole = SourceError(Source.CONF, "/etc/wireguard", "cannot list")
    gone = versions.build_content(state_of(a, errors=[whole]), None, first.doc)
    assert set(gone.doc["interfaces"]) == {"wg0", "wg1"}
    # missing after a complete read: really removed
    assert set(versions.build_content(state_of(a), None, first.doc).doc["interfaces"]) == {"wg0"}


@pytest.mark.parametrize(
    ("name", "conf_path"),
    [("wg0", "/etc/wireguard/.."), ("../../etc/cron.d/x", None), ("wg0", "/etc/wireguard/passwd")],
)
def test_to_dir_refuses_names_from_the_db_that_are_not_conf_file_names(tmp_path, name, conf_path):
    """A tampered interface name or conf_path cannot write outside the directory, nor anything at all."""
    from datetime import UTC, datetime

    from wgsyncd.restore import RestoreError, to_dir
    from wgsyncd.restore.loading import Loaded
    from wgsyncd.state import Interface

    good = Interface(name="wg1", conf_path="/etc/wireguard/wg1.conf")
    bad = Interface(name=name, conf_path=conf_path)
    for key in ("bad", name):  # filed under another name, or under its own
        loaded = Loaded("h", 1, datetime.now(UTC), {"wg1": good, key: bad})
        target = tmp_path / "etc-wireguard"
        with pytest.raises(RestoreError, match=r"version 1: interface .*: (name|conf_path): .*refusing"):
            to_dir(loaded, str(target))
        assert not target.exists()
