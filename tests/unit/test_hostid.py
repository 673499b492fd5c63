"""Host identity derived from the machine-id: what systemd computes, and never the machine-id itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from wgsyncd import config, hostid

MID = "0123456789abcdef0123456789abcdef"


def test_app_specific_id_is_what_systemd_computes() -> None:
    """The default host_id is `systemd-id128 machine-id --app-specific=<wgsyncd's app id>`."""
    tool = shutil.which("systemd-id128")
    machine = hostid.machine_id()
    if tool is None or machine is None:
        pytest.skip("systemd-id128 or /etc/machine-id missing")
    want = subprocess.run(
        [tool, "machine-id", f"--app-specific={hostid.HOST_ID_APP_ID.hex}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert hostid.app_specific_id(machine, hostid.HOST_ID_APP_ID) == want
    assert hostid.default_host_id() == want != machine


def test_host_id_and_fingerprint_never_reveal_the_machine_id(tmp_path: Path, monkeypatch) -> None:
    mid = tmp_path / "machine-id"
    mid.write_text(MID + "\n")
    monkeypatch.setattr(hostid, "MACHINE_ID_PATHS", (str(mid),))
    host_id, fp = hostid.default_host_id(), hostid.machine_fingerprint()
    assert len(host_id) == 32 and host_id[12] == "4" and host_id[16] in "89ab"  # a v4 UUID, like systemd's
    assert MID not in (host_id, fp) and host_id != fp
    assert fp == hostid.app_specific_id(MID, hostid.FINGERPRINT_APP_ID)
    (tmp_path / "c.toml").write_text('[database]\ndsn = "host=/tmp"\n')
    cfg = config.load(str(tmp_path / "c.toml"), environ={})
    assert (cfg.host_id, cfg.machine_fp) == (host_id, fp)
    (tmp_path / "c.toml").write_text(f'host_id = "{MID}"\n')  # an upgraded host keeps its old id
    assert config.load(str(tmp_path / "c.toml"), environ={}).host_id == MID
    (tmp_path / "c.toml").write_text('machine_fp = "forged"\n')
    with pytest.raises(config.ConfigError, match="machine_fp: unknown key"):
        config.load(str(tmp_path / "c.toml"), environ={})
