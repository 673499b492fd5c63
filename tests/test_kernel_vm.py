"""Kernel tier: wgsyncd's netlink reader and restore --apply against a real WireGuard kernel module.

One boot per session (tests/beds/qemu.py) runs tests/kernel_vm inside the VM: the
reader checks once per pyroute2 version (Debian's 0.7.2 and PyPI's current), then
restore --apply onto a wiped interface per backend (`wg syncconf` once, netlink once
per pyroute2 version; kernel_vm/restore_vm.py). Each result line the VM sends
becomes one test here; a result that never came back fails. Run with::

    .venv/bin/pytest tests/test_kernel_vm.py -m slow -q

Outside root or without qemu / a kernel it skips with the reason; with CI=true it fails.
The tests at the bottom (not slow) check the host-side pieces without a VM: the
comparison catches every kind of difference, result lines parse strictly, the cpio
writer makes archives ``cpio`` reads back, restore's netlink messages carry the
kernel's flag bits whatever pyroute2 is installed.
"""

from __future__ import annotations

import base64
import copy
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.beds import qemu
from tests.kernel_vm import cases, compare
from wgsyncd.sources.kernel import parse_wg_dump

LABELS = qemu.pyroute2_labels()
EXPECTED = cases.expected_ids(LABELS)
RESTORE = cases.restore_ids(LABELS)
READER = [rid for rid in EXPECTED if rid not in RESTORE]


@pytest.fixture(scope="session")
def vm_run(tmp_path_factory: pytest.TempPathFactory) -> qemu.VmRun:
    """The one boot of this session, shared by every test below."""
    return qemu.boot_session(tmp_path_factory)


def _result(run: qemu.VmRun, rid: str) -> dict:
    """The VM's result for ``rid``; fails with the console tail when it never came back."""
    result = run.results.get(rid)
    if result is None:
        why = run.error or "the VM job did not report it"
        pytest.fail(f"no result for {rid}: {why}\n--- console tail ---\n{run.console_tail()}", pytrace=False)
    return result


def _check(run: qemu.VmRun, rid: str, record_property: pytest.RecordProperty) -> dict:
    """Assert one VM result passed; its metrics go into the JUnit report."""
    result = _result(run, rid)
    for key, value in result["metrics"].items():
        record_property(key, value)
    assert result["ok"], f"{rid}: {result['detail']}"
    return result


@pytest.mark.slow
@pytest.mark.parametrize("rid", READER)
def test_in_vm(vm_run: qemu.VmRun, rid: str, record_property: pytest.RecordProperty) -> None:
    """One check that ran inside the VM: the netlink read equals the dump, the setup, the write."""
    _check(vm_run, rid, record_property)


@pytest.mark.slow
@pytest.mark.parametrize("rid", RESTORE)
def test_restore_apply_reproduces_dump(
    vm_run: qemu.VmRun, rid: str, record_property: pytest.RecordProperty
) -> None:
    """restore --apply onto a real kernel interface, per backend (`wg syncconf`; netlink per pyroute2).

    In the same boot (kernel_vm.restore_vm): a wiped interface gets 300 peers and its
    `wg show dump` equals the version's; applying again changes nothing and a live
    session keeps its handshake and counters; a version with peers removed, changed
    and added gives exactly its dump, in the kernel's peer order.
    """
    result = _check(vm_run, rid, record_property)
    if "apply_s" in result["metrics"]:
        print(f"\n{rid}: apply {result['metrics']['apply_s']}s: {result['detail'][:160]}")


@pytest.mark.slow
def test_vm_sent_only_expected_results(vm_run: qemu.VmRun) -> None:
    """Every id the VM sent is one the host expects, so the two sides never drift apart silently."""
    assert sorted(set(vm_run.results) - set(EXPECTED)) == []
    assert vm_run.done is not None, vm_run.error


@pytest.mark.slow
def test_vm_boot_within_budget(vm_run: qemu.VmRun) -> None:
    """The whole tier must fit CI's 10 minutes: build plus boot well under that."""
    total = vm_run.build_seconds + vm_run.boot_seconds
    print(
        f"kernel VM: build {vm_run.build_seconds:.1f}s + boot/job {vm_run.boot_seconds:.1f}s = {total:.1f}s"
    )
    assert total < 540, f"kernel VM took {total:.0f}s"


@pytest.mark.slow
@pytest.mark.parametrize("label", LABELS)
def test_timing_10000_peers_reported(
    vm_run: qemu.VmRun, label: str, record_property: pytest.RecordProperty
) -> None:
    """The netlink read time for 10,000 peers next to `wg show dump`, measured in the same boot."""
    metrics = _result(vm_run, cases.label_id("timing_10000_peers", label))["metrics"]
    for key in ("netlink_read_s", "wg_dump_s", "parse_wg_dump_s"):
        record_property(key, metrics.get(key))
    print(
        f"\n10,000 peers, pyroute2 {metrics.get('pyroute2')}: netlink read {metrics.get('netlink_read_s')}s, "
        f"`wg show dump` {metrics.get('wg_dump_s')}s (+ parse {metrics.get('parse_wg_dump_s')}s), "
        f"ratio {metrics.get('ratio_read_to_dump')}x"
    )
    assert metrics.get("netlink_read_s", 0) > 0 and metrics.get("wg_dump_s", 0) > 0


# ---------------------------------------------------------------- host-side, no VM


def _key(n: int) -> str:
    """A fixed, distinct base64 key per n (no randomness: failures reproduce)."""
    return base64.b64encode(bytes([n]) * 32).decode()


def _dump_text() -> str:
    """A small `wg show all dump` with a many-allowed-IP peer, a psk and a live peer."""
    many = ",".join(f"198.18.{i // 256}.{i % 256}/32" for i in range(300))
    return "\n".join(
        [
            f"wgt0\t{_key(1)}\t{_key(2)}\t51820\t0x1234",
            f"wgt0\t{_key(3)}\t{_key(4)}\t203.0.113.5:51820\t{many}\t0\t0\t0\t25",
            f"wgt0\t{_key(5)}\t(none)\t[2001:db8::1]:1\t192.0.2.0/24,2001:db8::/64\t1700000000\t100\t200\toff",
            f"wgt0\t{_key(6)}\t(none)\t(none)\t(none)\t0\t0\t0\toff",
        ]
    )


def _mutations() -> dict[str, tuple]:
    """Each way a read can differ from the dump, and the field the report must name."""

    def drop_last_allowed(i):
        p = i.peers[_key(3)]
        p.allowed_ips = p.allowed_ips[:-1]

    def swap_peers(i):
        i.peers = dict(reversed(list(i.peers.items())))

    return {
        "last allowed IP missing": (drop_last_allowed, "allowed_ips"),
        "endpoint": (lambda i: setattr(i.peers[_key(5)], "endpoint", "[2001:db8::2]:1"), "endpoint"),
        "preshared key": (lambda i: setattr(i.peers[_key(3)], "preshared_key", None), "preshared_key"),
        "keepalive": (lambda i: setattr(i.peers[_key(3)], "persistent_keepalive", 0), "persistent_keepalive"),
        "rx counter": (lambda i: setattr(i.peers[_key(5)], "rx_bytes", 101), "rx_bytes"),
        "handshake": (lambda i: setattr(i.peers[_key(5)], "latest_handshake", None), "latest_handshake"),
        "peer missing": (lambda i: i.peers.pop(_key(6)), "1 missing"),
        "peer order": (swap_peers, "peer order differs"),
        "fwmark": (lambda i: setattr(i, "fwmark", 0), "fwmark"),
        "listen port": (lambda i: setattr(i, "listen_port", 1), "listen_port"),
        "private key": (lambda i: setattr(i, "private_key", None), "private_key"),
    }


def test_compare_identical_is_clean() -> None:
    """The same dump compared with itself shows no difference."""
    iface = parse_wg_dump(_dump_text())["wgt0"]
    assert compare.compare_to_dump(iface, iface, copy.deepcopy(iface)) == ([], 0)


@pytest.mark.parametrize("mutation", list(_mutations()))
def test_compare_catches_each_difference(mutation: str) -> None:
    """One changed field, one missing allowed IP or peer makes the kernel tier fail, and is named."""
    dump = parse_wg_dump(_dump_text())["wgt0"]
    got = copy.deepcopy(dump)
    change, expected = _mutations()[mutation]
    change(got)
    diffs, _ = compare.compare_to_dump(got, dump, dump)
    assert diffs and any(expected in d for d in diffs), diffs
    assert not any(_key(1) in d for d in diffs), "a private key value leaked into a message"


def test_compare_moving_counters_are_bounded() -> None:
    """A counter that moved between the two dumps passes only inside [before, after]."""
    before = parse_wg_dump(_dump_text())["wgt0"]
    after = copy.deepcopy(before)
    after.peers[_key(5)].rx_bytes = 300
    got = copy.deepcopy(before)
    got.peers[_key(5)].rx_bytes = 250
    assert compare.compare_to_dump(got, before, after) == ([], 1)
    got.peers[_key(5)].rx_bytes = 301
    assert compare.compare_to_dump(got, before, after)[0]


def test_parse_results_is_strict() -> None:
    """CR from the serial line is fine; a truncated JSON line is reported, never a pass."""
    text = (
        'noise\r\nWGSYNCD-RESULT {"id": "a", "ok": true, "detail": "", "metrics": {}}\r\n'
        'WGSYNCD-RESULT {"id": "b", "ok": tr\n'
        'WGSYNCD-DONE {"uptime_s": 1}\n'
    )
    results, done, bad = qemu.parse_results(text)
    assert list(results) == ["a"] and results["a"]["ok"] is True
    assert done == {"uptime_s": 1}
    assert len(bad) == 1 and bad[0].startswith("WGSYNCD-RESULT")


def test_expected_ids_are_unique() -> None:
    """Two checks with one id would hide one of them."""
    ids = cases.expected_ids(["debian", "pypi"])
    assert len(ids) == len(set(ids))


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio is not installed (apt-get install cpio)")
def test_cpio_writer_roundtrip(tmp_path: Path) -> None:
    """What CpioWriter writes, GNU cpio extracts with the same bytes, modes, mtimes and links."""
    src = tmp_path / "src.py"
    src.write_text("x = 1\n")
    os.utime(src, (1_600_000_000, 1_600_000_000))
    archive = tmp_path / "a.cpio"
    with archive.open("wb") as out:
        w = qemu.CpioWriter(out)
        w.add_file("usr/lib/x/src.py", src)
        w.add_bytes("init", b"#!/bin/sh\n", 0o755)
        w.symlink("bin/sh", "busybox")
        w.close()
    dest = tmp_path / "out"
    dest.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet", "-F", str(archive)], cwd=dest, check=True, capture_output=True)
    assert (dest / "usr/lib/x/src.py").read_text() == "x = 1\n"
    assert int((dest / "usr/lib/x/src.py").stat().st_mtime) == 1_600_000_000
    assert (dest / "init").stat().st_mode & 0o777 == 0o755
    assert os.readlink(dest / "bin/sh") == "busybox"


def test_unavailable_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """With CI=true a missing bed is a failure, elsewhere a skip."""
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="unavailable in CI: no qemu"):
        qemu._unavailable("no qemu")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no qemu"):
        qemu._unavailable("no qemu")


# ---------------------------------------------------------------- restore's netlink messages, no VM
#
# The VM proves the kernel takes them; these pin the bytes on the host, encoded by the
# pyroute2 this interpreter imports (run them under Debian's python3 for 0.7.2 too).


def _encode(attrs: list) -> bytes:
    """One WG_CMD_SET_DEVICE message as pyroute2 encodes it for the socket."""
    from pyroute2.netlink.generic.wireguard import wgmsg

    msg = wgmsg()
    msg["cmd"], msg["version"] = 1, 1
    msg["attrs"] = attrs
    msg["header"]["type"] = 0x20
    msg.encode()
    return bytes(msg.data)


def _decode(data: bytes) -> tuple[dict[int, bytes], list[dict[int, object]]]:
    """Device attributes by type and the peer nests (type -> raw bytes, allowed IPs as text)."""
    import socket
    import struct

    from wgsyncd.sources.netlink import _nlas

    device: dict[int, bytes] = {}
    peers: list[dict[int, object]] = []
    for typ, a, b in _nlas(data, 20, len(data)):
        if typ != 8:
            device[typ] = data[a:b]
            continue
        for _t, pa, pb in _nlas(data, a, b):
            peer: dict[int, object] = {}
            for ptyp, x, y in _nlas(data, pa, pb):
                if ptyp == 9:
                    ips = []
                    for _i, ia, ib in _nlas(data, x, y):
                        f = {t: data[u:v] for t, u, v in _nlas(data, ia, ib)}
                        fam = struct.unpack("=H", f[1])[0]
                        ips.append(f"{socket.inet_ntop(fam, f[2])}/{f[3][0]}")
                    peer[9] = ips
                else:
                    peer[ptyp] = data[x:y]
            peers.append(peer)
    return device, peers


def _desired_and_changes(n_allowed: int = 3):
    """A version with one peer to remove, one to update (psk/keepalive cleared) and one to add."""
    from wgsyncd import restore
    from wgsyncd.state import Interface, Peer, Secret

    priv = base64.b64encode(bytes([9]) * 32).decode()
    desired = Interface(name="wgt0", private_key=Secret(priv), listen_port=51820, fwmark=0x42)
    desired.peers[_key(2)] = Peer(_key(2), allowed_ips=("10.0.0.1/32",), persistent_keepalive=0)
    allowed = tuple(f"198.18.{i // 256}.{i % 256}/32" for i in range(n_allowed))
    desired.peers[_key(3)] = Peer(
        _key(3),
        preshared_key=Secret(_key(4)),
        allowed_ips=(*allowed, "2001:db8::/64"),
        endpoint="[fe80::1%lo]:51820",
        persistent_keepalive=25,
    )
    changes = restore.InterfaceChanges(
        "wgt0",
        "netlink",
        device=("private_key", "fwmark"),
        peers=[
            restore.PeerChange(_key(3), "add"),
            restore.PeerChange(_key(2), "update", ("preshared_key", "persistent_keepalive")),
            restore.PeerChange(_key(1), "remove"),
        ],
    )
    return desired, changes


def test_netlink_messages_carry_the_kernels_flag_bits() -> None:
    """Remove first with REMOVE_ME only; written peers get REPLACE_ALLOWEDIPS, zero psk, keepalive 0."""
    import socket
    import struct

    from wgsyncd import restore

    desired, changes = _desired_and_changes()
    messages = restore.netlink_messages(desired, changes, "test")
    assert len(messages) == 1
    device, peers = _decode(_encode(messages[0]))
    assert device[2].rstrip(b"\0") == b"wgt0" and device[3] == bytes([9]) * 32
    assert struct.unpack("=I", device[7])[0] == 0x42 and 6 not in device  # port unchanged: not sent
    assert [base64.b64encode(p[1]).decode() for p in peers] == [_key(1), _key(2), _key(3)]
    removed, updated, added = peers
    assert set(removed) == {1, 3} and struct.unpack("=I", removed[3])[0] == 1  # WGPEER_F_REMOVE_ME
    assert struct.unpack("=I", updated[3])[0] == 2  # WGPEER_F_REPLACE_ALLOWEDIPS
    assert updated[2] == bytes(32) and struct.unpack("=H", updated[5])[0] == 0  # psk cleared, keepalive off
    assert updated[9] == ["10.0.0.1/32"] and 4 not in updated  # full list; no endpoint to send
    assert added[2] == base64.b64decode(_key(4)) and added[9][-1] == "2001:db8::/64"
    endpoint = added[4]
    family, port = struct.unpack("=H", endpoint[:2])[0], struct.unpack(">H", endpoint[2:4])[0]
    scope = struct.unpack("=I", endpoint[24:28])[0]  # the kernel reads sin6_scope_id in host order
    assert (family, port, scope) == (socket.AF_INET6, 51820, socket.if_nametoindex("lo"))


def test_netlink_messages_split_a_long_allowed_ip_list() -> None:
    """2,000 allowed IPs: several messages within the budget; first part replaces, the rest append."""
    from wgsyncd import restore

    desired, changes = _desired_and_changes(n_allowed=2000)
    messages = restore.netlink_messages(desired, changes, "test")
    assert len(messages) >= 4
    parts, ips = [], []
    for attrs in messages:
        data = _encode(attrs)
        assert len(data) <= restore.NETLINK_MESSAGE_BUDGET + 256, len(data)
        for peer in _decode(data)[1]:
            if base64.b64encode(peer[1]).decode() == _key(3):
                parts.append(int.from_bytes(peer[3], "little"))
                ips += peer.get(9, [])
    assert parts[0] == restore.WGPEER_F_REPLACE_ALLOWEDIPS
    assert set(parts[1:]) == {restore.WGPEER_F_UPDATE_ONLY} and len(parts) >= 4
    assert ips == list(desired.peers[_key(3)].allowed_ips)  # all of them, in order
    first = _decode(_encode(messages[0]))[0]
    assert 3 in first and all(3 not in _decode(_encode(m))[0] for m in messages[1:])  # key sent once


def test_auto_picks_wg_when_the_binary_exists_else_netlink(tmp_path: Path) -> None:
    """A kernel link: `wg syncconf` when wg is installed, else netlink; netlink wants a WireGuard link."""
    from wgsyncd import restore

    fake_wg = tmp_path / "wg"
    fake_wg.write_text("#!/bin/sh\n")
    fake_wg.chmod(0o755)
    assert restore._find_target("lo", str(tmp_path), "auto", str(fake_wg), "x").backend == "wg"
    assert (
        restore._find_target("lo", str(tmp_path), "auto", str(tmp_path / "no-wg"), "x").backend == "netlink"
    )
    with pytest.raises(restore.RestoreError, match="lo is not a kernel WireGuard link"):
        restore._find_target("lo", str(tmp_path), "netlink", str(fake_wg), "x")
    with pytest.raises(restore.RestoreError, match="nope0 does not exist"):
        restore._find_target("nope0", str(tmp_path), "netlink", str(fake_wg), "x")
    with pytest.raises(restore.RestoreError, match="must be auto, uapi, wg or netlink"):
        restore.apply(restore.Loaded("h", 1, None, {}), via="kernel")  # type: ignore[arg-type]


def test_syncconf_file_spells_out_cleared_fields() -> None:
    """`wg syncconf` keeps a field the file leaves out: no psk / no keepalive must be written as such."""
    from wgsyncd import restore

    desired, _ = _desired_and_changes()
    text = restore.render_syncconf(desired)
    block = text.split("[Peer]")[1]
    assert f"PresharedKey = {restore.ZERO_KEY_B64}" in block and "PersistentKeepalive = 0" in block
    assert "PersistentKeepalive = 25" in text.split("[Peer]")[2]
