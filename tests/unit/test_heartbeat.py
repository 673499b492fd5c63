"""heartbeat + `wgsyncd status --local`: the container healthcheck without a database."""

from __future__ import annotations

import subprocess
import sys
import time

from wgsyncd import heartbeat
from wgsyncd.heartbeat import Heartbeat


def test_fresh_ok_is_healthy_stale_or_failed_is_not():
    now = time.time()
    assert Heartbeat(now - 10, "ok", "synced", 60).problem(now) is None
    assert Heartbeat(now - 10, "partial", "synced", 60).problem(now) is None
    assert "failed" in Heartbeat(now - 10, "failed", "DB unreachable", 60).problem(now)
    assert "stuck" in Heartbeat(now - 1000, "ok", "synced", 60).problem(now)


def test_write_is_atomic_and_round_trips(tmp_path):
    beat = Heartbeat(123.0, "ok", "synced 1 interface", 60.0)
    heartbeat.write(str(tmp_path / "state"), beat)
    assert heartbeat.read(str(tmp_path / "state")) == beat
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["last-cycle.json"]


def _status_local(tmp_path, env_extra):
    env = {"PATH": "/usr/bin:/bin", "WGSYNCD_DAEMON_STATE_DIR": str(tmp_path), **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "wgsyncd", "--config", "/dev/null", "status", "--local"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_cli_status_local_exit_codes(tmp_path):
    proc = _status_local(tmp_path, {})
    assert proc.returncode == 1 and "no usable last-cycle file" in proc.stderr
    heartbeat.write(str(tmp_path), Heartbeat(time.time(), "ok", "synced 2 interfaces", 60))
    proc = _status_local(tmp_path, {})
    assert proc.returncode == 0 and "healthy: synced 2 interfaces" in proc.stdout
    heartbeat.write(str(tmp_path), Heartbeat(time.time() - 4000, "ok", "synced", 60))
    assert _status_local(tmp_path, {}).returncode == 1
