"""Reboot safety: runtime-only peers come back after the interface is rebuilt from its conf.

A wireguard-go interface runs its conf's peers plus peers added at run time with
`wg set` (what wgrest v1 does: kernel only). A daemon cycle with ``[persist]
enabled`` keeps the snapshot; the interface is torn down and brought up again from
its conf (what a reboot does); `wgsyncd persist-restore` puts the runtime peers
back: `wg show dump` equals the one before the reboot, counters and handshakes aside.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.beds.host import Host, strip
from tests.beds.wireguard import generated_peers, genkey, pubkey
from wgsyncd import config, persist
from wgsyncd.aftercycle import after_cycle
from wgsyncd.cycle import collect

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[1]


def dump_minus_runtime(text: str) -> list[str]:
    """`wg show dump` without the listen port line's varying fields and the peers' handshake/counters."""
    lines = text.splitlines()
    peers = sorted("\t".join(cols[:4] + cols[7:]) for cols in (line.split("\t") for line in lines[1:]))
    return [lines[0], *peers]


@pytest.fixture
def runtime_host(tmp_path: Path, wg_bed) -> tuple[Host, str, Path]:
    """One interface from a conf with 3 peers, then 4 peers added at run time; persist enabled."""
    host = Host(tmp_path, wg_bed, "dbname=unused", "host-persist")
    name = host.add_interface(3)
    iface = host.ifaces[name]
    for spec in generated_peers(7, psk_every=2)[3:]:  # allowed IPs distinct from the conf's 3 peers
        iface.set_peer(
            spec.public_key,
            preshared_key=spec.preshared_key,
            endpoint=spec.endpoint,
            allowed_ips=tuple(spec.allowed_ips),
            persistent_keepalive=spec.persistent_keepalive,
        )
    persist_dir = tmp_path / "persist"
    host.write_config(f'[persist]\nenabled = true\ndirectory = "{persist_dir}"\n[metrics]\ntextfile = ""\n')
    return host, name, persist_dir


def snapshot_cycle(host: Host, state_dir: Path) -> None:
    """What the daemon does after a cycle, with this host's config (no database needed for it)."""
    cfg = config.load(str(host.config), environ={})
    cfg.daemon.state_dir = str(state_dir)
    state = collect(cfg)
    assert not state.errors, state.errors

    class Report:  # the cycle report's fields the hook reads
        duration, rows_written, drift, round_trips = 0.1, 0, 0, 0

    report = Report()
    report.state = state  # type: ignore[attr-defined]
    after_cycle(cfg, "ok", report)


def persist_restore(host: Host, *args: str) -> subprocess.CompletedProcess[str]:
    """The command wgsyncd-persist.service runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WGSYNCD_")}
    return subprocess.run(
        [sys.executable, "-m", "wgsyncd", "--config", str(host.config), "persist-restore", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_runtime_peers_survive_a_rebuild_from_the_conf(runtime_host, tmp_path: Path) -> None:
    host, name, persist_dir = runtime_host
    iface = host.ifaces[name]
    before = dump_minus_runtime(iface.dump())
    assert len(before) == 1 + 7
    snapshot_cycle(host, tmp_path / "state")
    snap_file = persist_dir / f"{name}.json"
    assert stat.S_IMODE(persist_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(snap_file.stat().st_mode) == 0o600
    mtime = snap_file.stat().st_mtime_ns
    snapshot_cycle(host, tmp_path / "state")
    assert snap_file.stat().st_mtime_ns == mtime  # unchanged state: not rewritten

    # the reboot: wireguard-go gone, started again, configured from the conf file only
    iface._stop()
    iface._start()
    iface.setconf(strip(host.conf_dir / f"{name}.conf"))
    assert len(dump_minus_runtime(iface.dump())) == 1 + 3

    dry = persist_restore(host, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert len(json.loads(dry.stdout)["interfaces"][0]["added"]) == 4
    assert len(dump_minus_runtime(iface.dump())) == 1 + 3  # a dry run changes nothing

    res = persist_restore(host)
    assert res.returncode == 0, res.stderr
    assert f"{name}: put back 4 peers" in res.stdout
    assert dump_minus_runtime(iface.dump()) == before
    assert "put back peer" in res.stderr  # the log names every peer put back (public keys only)

    again = persist_restore(host)
    assert again.returncode == 0 and f"{name}: put back 0 peers" in again.stdout


def test_present_peers_and_their_allowed_ips_are_left_alone(runtime_host, tmp_path: Path) -> None:
    host, name, persist_dir = runtime_host
    iface = host.ifaces[name]
    snapshot_cycle(host, tmp_path / "state")
    snap = persist.load_snapshot(persist_dir / f"{name}.json")
    conf_keys = {s.public_key for s in host.specs[name]}
    runtime = [k for k in snap.peers if k not in conf_keys]
    taken = snap.peers[runtime[0]].allowed_ips[0]
    # after the "reboot" a conf peer now holds one of a runtime peer's allowed IPs, with new fields
    iface._stop()
    iface._start()
    iface.setconf(strip(host.conf_dir / f"{name}.conf"))
    present = host.specs[name][0].public_key
    iface.set_peer(present, allowed_ips=(*host.specs[name][0].allowed_ips, taken), persistent_keepalive=7)
    present_line = next(line for line in iface.dump().splitlines() if line.startswith(present))
    res = persist_restore(host)
    assert res.returncode == 0, res.stderr
    assert next(line for line in iface.dump().splitlines() if line.startswith(present)) == present_line
    assert "left with the present peer" in res.stderr
    restored = next(line for line in iface.dump().splitlines() if line.startswith(runtime[0]))
    assert taken not in restored.split("\t")[3]


def test_a_planted_snapshot_is_refused_naming_the_file_and_nothing_is_sent(
    runtime_host, tmp_path: Path
) -> None:
    host, name, persist_dir = runtime_host
    iface = host.ifaces[name]
    snapshot_cycle(host, tmp_path / "state")
    path = persist_dir / f"{name}.json"
    doc = json.loads(path.read_text())
    iface._stop()
    iface._start()
    iface.setconf(strip(host.conf_dir / f"{name}.conf"))
    after_reboot = sorted(iface.dump().splitlines())
    for field, value in (
        ("allowed_ips", ["10.0.0.1/32\nremove=true"]),
        ("endpoint", "192.0.2.1:51820\npublic_key=00"),
        ("public_key", "not-a-key"),
        ("preshared_key", "A" * 43 + "B"),
        ("persistent_keepalive", 70000),
    ):
        bad = json.loads(json.dumps(doc))
        bad["peers"][-1][field] = value
        path.write_text(json.dumps(bad))
        res = persist_restore(host)
        assert res.returncode == 1 and str(path) in res.stderr and field in res.stderr, (field, res.stderr)
        assert sorted(iface.dump().splitlines()) == after_reboot, field
    path.write_text(json.dumps(doc))
    path.chmod(0o644)
    res = persist_restore(host)
    assert res.returncode == 1 and "0600" in res.stderr
    other = genkey()  # a snapshot made for another key of the same name is not applied
    path.chmod(0o600)
    doc["public_key"] = pubkey(other)
    path.write_text(json.dumps(doc))
    res = persist_restore(host)
    assert (
        res.returncode == 0
        and "different key" in res.stdout
        and sorted(iface.dump().splitlines()) == after_reboot
    )


def test_the_snapshot_follows_a_deliberate_removal_at_the_next_cycle(runtime_host, tmp_path: Path) -> None:
    host, name, persist_dir = runtime_host
    iface = host.ifaces[name]
    snapshot_cycle(host, tmp_path / "state")
    gone = next(iter(persist.load_snapshot(persist_dir / f"{name}.json").peers))
    iface.remove_peer(gone)
    snapshot_cycle(host, tmp_path / "state")
    assert gone not in persist.load_snapshot(persist_dir / f"{name}.json").peers
