"""Restore never renders or sends a value from the database that fails its validator.

Issue 12 items 3, 5 and 7: a name with a path, a newline in any value, escape sequences
in the diff. The version documents here are what ``config_versions.doc`` holds (built
through ``desired_interface``, as restore.load does), so each attack is the database's.
"""

from __future__ import annotations

import base64
import os
import re
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from wgsyncd import restore
from wgsyncd.restore import RestoreError
from wgsyncd.restore.loading import Loaded, desired_interface
from wgsyncd.sources import uapi

LABEL = "host h version 7"


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def doc(**over: Any) -> dict[str, Any]:
    """A version's interface document with one peer; ``peer_*`` keys go to the peer."""
    peer = {"public_key": key(), "allowed_ips": ["10.0.0.2/32"], "endpoint": "192.0.2.1:51820"}
    peer.update({k[5:]: v for k, v in over.items() if k.startswith("peer_")})
    d = {
        "name": "wg0",
        "listen_port": 51820,
        "addresses": ["10.0.0.1/24"],
        "dns": ["192.0.2.53"],
        "peers": [peer],
    }
    d.update({k: v for k, v in over.items() if not k.startswith("peer_")})
    return d


def loaded(d: dict[str, Any], clear: dict[str, Any] | None = None) -> Loaded:
    name = d["name"]
    iface = desired_interface(d, clear or {"private_key": key()}, f"{LABEL}: interface {name}")
    return Loaded("h", 7, datetime.now(UTC), {name: iface})


BAD_VALUES = [
    ({"dns": ["192.0.2.53\nPostUp = touch /tmp/pwned"]}, "dns[0]: contains a control character"),
    ({"table": "off\nPostUp = touch /tmp/pwned"}, "table: contains a control character"),
    ({"post_up": ["true\rPostUp = x"]}, "post_up[0]: contains a control character"),
    ({"pre_down": ["echo \x00"]}, "pre_down[0]: contains a control character"),
    ({"addresses": ["10.0.0.1/24\nDNS = 1.1.1.1"]}, "addresses[0]: contains a control character"),
    ({"comments": ["# hi\n[Peer]"]}, "comments[0]: contains a control character"),
    ({"mtu": 10**6}, "mtu: out of range"),
    ({"listen_port": 70000}, "listen_port: out of range"),
    ({"fwmark": -1}, "fwmark: out of range"),
    ({"table": "main;reboot"}, "table: not off, auto"),
    ({"peer_endpoint": "192.0.2.1:51820\nPostUp = x"}, "endpoint: contains a control character"),
    ({"peer_endpoint": "fd00::1:51820"}, "endpoint: not host:port"),
    ({"peer_allowed_ips": ["10.0.0.2/32\n"]}, "allowed_ips[0]: contains a control character"),
    ({"peer_allowed_ips": ["10.0.0.2/33"]}, "allowed_ips[0]: not an IP address in CIDR notation"),
    ({"peer_name": "x\n[Interface]"}, "name: contains a control character"),
    ({"peer_persistent_keepalive": 65536}, "persistent_keepalive: out of range"),
    ({"peer_public_key": "A" * 43 + "=\n"}, "a peer: public_key: not a base64 WireGuard key"),
]


@pytest.mark.parametrize(("over", "named"), BAD_VALUES)
def test_a_bad_value_from_the_database_stops_every_target_before_the_first_write(tmp_path, over, named):
    bad = loaded(doc(**over))
    target = tmp_path / "etc-wireguard"
    for run in (
        lambda: restore.to_dir(bad, str(target)),
        lambda: restore.to_dir(bad, str(target), dry_run=True),
        lambda: restore.apply(bad, socket_dir=str(tmp_path / "run"), via="uapi"),
        lambda: restore.to_wgrest(bad, "http://127.0.0.1:9", token=None),
        lambda: restore.render_conf(bad.interfaces["wg0"]),
        lambda: restore.render_syncconf(bad.interfaces["wg0"]),
    ):
        with pytest.raises(RestoreError) as exc:
            run()
        text = str(exc.value)
        assert named in text, text
        assert "interface wg0" in text and "\n" not in text
    assert not target.exists()


def test_a_bad_secret_value_is_refused_without_showing_it(tmp_path):
    psk_pub = key()
    bad = loaded(
        doc(peer_public_key=psk_pub),
        {"private_key": key(), "preshared_keys": {psk_pub: "not\na key " + "x" * 30}},
    )
    with pytest.raises(
        RestoreError, match=rf"interface wg0: peer {re.escape(psk_pub)}: preshared_key: not a base64"
    ) as exc:
        restore.to_dir(bad, str(tmp_path / "t"))
    assert "x" * 30 not in str(exc.value)


def test_the_wgrest_target_sends_nothing_for_a_bad_value(wgrest_server):
    wgrest_server.add_device("wg0")
    bad = loaded(doc(dns=["1.1.1.1\nPostUp = x"]))
    with pytest.raises(RestoreError, match="dns"):
        restore.to_wgrest(bad, wgrest_server.url)
    assert wgrest_server.requests == []


# ---------------------------------------------------------------- a name with a path


EVIL = "../../x"


def evil_loaded() -> Loaded:
    iface = desired_interface({"name": EVIL, "peers": []}, {"private_key": key()}, "x")
    return Loaded("h", 7, datetime.now(UTC), {EVIL: iface})


def test_apply_never_builds_a_socket_path_from_a_name_with_a_path(tmp_path):
    socket_dir = tmp_path / "run" / "wireguard"
    socket_dir.mkdir(parents=True)
    # the attack: the name resolves to a socket somebody else listens on
    trap_path = uapi.socket_path(str(socket_dir), EVIL)
    assert Path(trap_path).resolve() == (tmp_path / "x.sock").resolve()
    trap = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    trap.bind(trap_path)
    trap.listen(1)
    trap.setblocking(False)
    try:
        for via in ("auto", "uapi", "wg", "netlink"):
            with pytest.raises(
                RestoreError, match=r"interface \.\./\.\./x: name: not a valid interface name"
            ):
                restore.apply(evil_loaded(), socket_dir=str(socket_dir), via=via)
            for dry in (True, False):
                with pytest.raises(RestoreError, match="name"):
                    restore.apply(evil_loaded(), socket_dir=str(socket_dir), via=via, dry_run=dry)
        with pytest.raises(BlockingIOError):
            trap.accept()  # nobody connected: no key ever went to the trap
    finally:
        trap.close()


def test_to_dir_never_writes_outside_the_target_for_a_name_with_a_path(tmp_path):
    target = tmp_path / "a" / "b" / "etc-wireguard"
    with pytest.raises(RestoreError, match="not a valid interface name"):
        restore.to_dir(evil_loaded(), str(target))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == []


# ---------------------------------------------------------------- the dry-run diff


def test_dry_run_diff_escapes_control_characters_and_redacts_every_key_form(tmp_path):
    old_private, hook_key, psk, peer_pub = key(), key(), key(), key()
    hex_key = os.urandom(32).hex()
    target = tmp_path / "etc-wireguard"
    target.mkdir()
    (target / "wg0.conf").write_text(
        "[Interface]\n"
        f"# PrivateKey = {old_private}\n"
        f"#PrivateKey={old_private}\n"
        "# title \x1b]0;owned\x07 \x1b[2J\r\n"
        f"PostUp = wg set %i private-key <(echo {hook_key}) # {hex_key}\n"
    )
    new_text = (
        "[Interface]\n"
        f"PrivateKey = {key()}\n"
        "# echo \x1b[31mred\n"
        f"\n[Peer]\nPublicKey = {peer_pub}\nPresharedKey = {psk}\n"
    )
    d = doc(name="wg0", peer_public_key=peer_pub)
    good = loaded(d, {"private_key": key(), "conf_text": new_text, "preshared_keys": {peer_pub: psk}})
    (change,) = restore.to_dir(good, str(target), dry_run=True)
    diff = change.diff
    for secret in (old_private, hook_key, psk, hex_key, good.interfaces["wg0"].private_key.reveal()):
        assert secret not in diff
    assert not any(ch in diff for ch in "\x1b\x07\r\x00")
    assert "\\x1b]0;owned\\x07 \\x1b[2J\\r" in diff and "\\x1b[31mred" in diff
    assert "-# PrivateKey = <secret fp:" in diff and f"+PublicKey = {peer_pub}" in diff
    assert diff.count("<secret fp:") >= 6


# ---------------------------------------------------------------- names a source finds on the host


def test_a_control_socket_named_with_a_newline_is_an_error_not_an_interface(tmp_path):
    from tests.test_kernel import FakeDaemon, answer, good_reply
    from wgsyncd.config import KernelConfig
    from wgsyncd.sources import kernel

    good = FakeDaemon(str(tmp_path / "good0.sock"), answer(good_reply()))
    evil = FakeDaemon(str(tmp_path / "wg0\nPostUp = x.sock"), answer(good_reply()))
    try:
        result = kernel.read(KernelConfig(backend="uapi", socket_dir=str(tmp_path), timeout=2.0))
    finally:
        good.close()
        evil.close()
    assert list(result.interfaces) == ["good0"]
    (err,) = result.errors
    assert err.interface is None and "wg0\\nPostUp = x.sock" in err.where and "\n" not in str(err)
