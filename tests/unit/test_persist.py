"""persist.py without a running interface: what the snapshot keeps, and what a bad file gets."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from wgsyncd import config, persist
from wgsyncd.state import HostState, Interface, Peer, Secret, Source, SourceError

KEY_A = base64.b64encode(b"\x01" * 32).decode()
KEY_B = base64.b64encode(b"\x02" * 32).decode()
PSK = base64.b64encode(b"\x03" * 32).decode()


def host(error_on: str | None = None) -> HostState:
    """wg0 runs one peer (with a psk) and has a conf-only peer; wg1 had a read error."""
    running = Peer(
        KEY_A,
        preshared_key=Secret(PSK),
        allowed_ips=("10.0.0.2/32",),
        endpoint="192.0.2.1:51820",
        persistent_keepalive=25,
        seen_by=(Source.KERNEL, Source.CONF),
    )
    conf_only = Peer(KEY_B, allowed_ips=("10.0.0.3/32",), seen_by=(Source.CONF,))
    wg0 = Interface(
        "wg0", public_key=KEY_B, peers={KEY_A: running, KEY_B: conf_only}, seen_by=(Source.KERNEL,)
    )
    wg1 = Interface("wg1", peers={}, seen_by=(Source.KERNEL,))
    errors = [SourceError(Source.KERNEL, "wg1", "timeout", interface="wg1")] if error_on else []
    return HostState("h", "h", datetime.now(UTC), interfaces={"wg0": wg0, "wg1": wg1}, errors=errors)


def test_snapshot_keeps_only_the_running_peers_and_skips_an_interface_read_in_part(tmp_path: Path) -> None:
    written = persist.save(str(tmp_path / "p"), host(error_on="wg1"))
    assert written == ["wg0"]  # wg1 could not be read fully: its (absent) snapshot is not replaced
    snap = persist.load_snapshot(tmp_path / "p" / "wg0.json")
    assert list(snap.peers) == [KEY_A] and snap.public_key == KEY_B
    peer = snap.peers[KEY_A]
    assert peer.preshared_key and peer.preshared_key.reveal() == PSK
    assert (peer.endpoint, peer.allowed_ips, peer.persistent_keepalive) == (
        "192.0.2.1:51820",
        ("10.0.0.2/32",),
        25,
    )
    assert persist.save(str(tmp_path / "p"), host(error_on="wg1")) == []  # unchanged: not rewritten


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(interface="../etc"), "interface name"),
        (lambda d: d.update(interface="wg1"), "does not match the file name"),
        (lambda d: d["peers"][0].update(allowed_ips=["10.0.0.0/8\nremove=true"]), "allowed_ips"),
        (lambda d: d["peers"][0].update(allowed_ips=["10.0.0.1"]), "without a prefix"),
        (lambda d: d["peers"][0].update(endpoint="evil.example:51820"), "endpoint"),
        (lambda d: d["peers"][0].update(preshared_key="short"), "preshared_key"),
        (lambda d: d["peers"][0].update(persistent_keepalive=True), "persistent_keepalive"),
        (lambda d: d["peers"].append(dict(d["peers"][0])), "listed twice"),
        (lambda d: d.update(format=2), "format 1"),
        (lambda d: d["peers"][0].update(allowed_ips=["fe80::1%x,0.0.0.0/0"]), "allowed_ips"),
        (lambda d: d["peers"][0].update(endpoint="[fe80::1%a,b]:51820"), "endpoint"),
        (lambda d: d["peers"][0].update(endpoint="192.0.2.1:0"), "endpoint"),
        (lambda d: d.update(interface="wg\u202e0"), "interface name"),
    ],
)
def test_a_bad_snapshot_is_refused_naming_the_file_and_never_showing_a_key(
    tmp_path: Path, change, message
) -> None:
    persist.save(str(tmp_path), host())
    path = tmp_path / "wg0.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(persist.PersistError) as err:
        persist.load_snapshot(path)
    assert str(path) in str(err.value) and message in str(err.value)
    assert PSK not in str(err.value)


def test_a_snapshot_others_can_read_is_refused(tmp_path: Path) -> None:
    persist.save(str(tmp_path), host())
    (tmp_path / "wg0.json").chmod(0o644)
    with pytest.raises(persist.PersistError, match="0600"):
        persist.load_snapshot(tmp_path / "wg0.json")


def test_persist_needs_the_kernel_source(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("host_id = 'h'\n[kernel]\nenabled = false\n[persist]\nenabled = true\n")
    with pytest.raises(config.ConfigError, match=r"^persist\.enabled"):
        config.load(str(path), environ={})


def test_a_snapshot_dir_others_can_enter_is_refused_naming_it(tmp_path: Path) -> None:
    persist.save(str(tmp_path / "p"), host())
    (tmp_path / "p").chmod(0o755)
    with pytest.raises(persist.PersistError, match=rf"^{tmp_path}/p: snapshot directory must be owned by us"):
        persist.load_snapshot(tmp_path / "p" / "wg0.json")


def test_a_symlink_or_fifo_snapshot_is_refused(tmp_path: Path) -> None:
    persist.save(str(tmp_path), host())
    path = tmp_path / "wg0.json"
    path.rename(tmp_path / "elsewhere")
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(persist.PersistError, match=r"wg0\.json: not a regular file \(a symlink\)"):
        persist.load_snapshot(path)
    path.unlink()
    os.mkfifo(path, 0o600)  # opened for reading, a FIFO would block until a writer came
    with pytest.raises(persist.PersistError, match=r"wg0\.json: not a regular file"):
        persist.load_snapshot(path)


@pytest.mark.parametrize("swap_at", [1, 2])
def test_a_symlink_swapped_in_between_check_and_read_is_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap_at: int
) -> None:
    # the race the old lstat-then-read_text had: the attacker swaps the file for a symlink
    # to a file of their choosing right after the checks. The swap runs as a side effect
    # of our own fstat calls (1: the directory's, before the open; 2: the file's, after it)
    persist.save(str(tmp_path), host())
    path = tmp_path / "wg0.json"
    evil = json.loads(path.read_text())
    evil["peers"][0]["allowed_ips"] = ["0.0.0.0/0"]
    (tmp_path / "evil").write_text(json.dumps(evil))
    (tmp_path / "evil").chmod(0o600)
    real_fstat, calls = os.fstat, []

    def fstat_then_swap(fd: int) -> os.stat_result:
        result = real_fstat(fd)
        calls.append(fd)
        if len(calls) == swap_at:
            path.unlink()
            path.symlink_to(tmp_path / "evil")
        return result

    monkeypatch.setattr(persist.os, "fstat", fstat_then_swap)
    if swap_at == 1:
        with pytest.raises(persist.PersistError, match="a symlink"):
            persist.load_snapshot(path)
    else:  # already open: the file read is the one checked
        assert persist.load_snapshot(path).peers[KEY_A].allowed_ips == ("10.0.0.2/32",)
    assert len(calls) == swap_at
