"""wgsyncd under real systemd (PID 1 in systemd-nspawn), syncing into a real PostgreSQL.

One container is booted for the whole run (tests/beds/nspawn.py). The project is
installed into it from a read-only bind of the work tree plus a tiny
/usr/bin/wgsyncd wrapper (until the .deb exists), running on the container's own
Debian libraries. The database is the postgres bed's cluster on the host,
reached over 127.0.0.1 (the container shares the host's network).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.beds.nspawn import Container, booted_container, nspawn_rootfs  # noqa: F401 -- fixtures

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
WRAPPER = """#!/bin/sh
# test install of wgsyncd from the work tree (the .deb replaces this)
PYTHONPATH=/opt/wgsyncd-src:/opt/wgsyncd-lib exec /usr/bin/python3 -m wgsyncd "$@"
"""
PRIVATE_KEY = "aGVsbG8tdGhpcy1pcy1hLXRlc3Qta2V5LTMyYnl0ZXM="  # 32 bytes, a test key


def _wgconfig_dir() -> Path:
    """wgconfig (not in Debian): the copy in this interpreter's site-packages."""
    import wgconfig

    return Path(wgconfig.__file__).parent


@dataclass
class Installed:
    """The container with wgsyncd installed and configured."""

    box: Container
    dsn: str  # host-side DSN of the container's database
    host_id: str

    def journal(self, unit: str) -> list[dict[str, str]]:
        """`journalctl -u UNIT -o json` entries."""
        out = self.box.run("journalctl", "-u", unit, "-o", "json", "--no-pager").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def query(self, sql: str, *params: object) -> list[tuple]:
        """One autocommit query on the host side."""
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    def syncs(self) -> int:
        """sync_status rows written for this host so far."""
        return self.query("SELECT count(*) FROM sync_status WHERE host_id = %s", self.host_id)[0][0]

    def drop_in(self, unit: str, text: str | None) -> None:
        """Write (or remove, with None) a test drop-in for ``unit`` and daemon-reload."""
        path = f"/etc/systemd/system/{unit}.d/test.conf"
        if text is None:
            self.box.run("rm", "-f", path)
        else:
            self.box.write(path, text)
        self.box.run("systemctl", "daemon-reload")


@pytest.fixture(scope="module")
def installed(booted_container: Container, pg_cluster) -> Iterator[Installed]:  # noqa: F811
    """Install the work tree, units and a config into the booted container."""
    import psycopg

    from wgsyncd import store

    box = booted_container
    dsn = pg_cluster.create_database()
    with psycopg.connect(dsn) as conn:
        store.migrate(conn)
    tcp_dsn = pg_cluster.dsn(dsn.split("dbname=")[1].split()[0], via_tcp=True)
    host_id = "nspawn-" + uuid.uuid4().hex[:10]
    root = Path(f"/proc/{box.leader}/root")
    shutil.copytree(_wgconfig_dir(), root / "opt/wgsyncd-lib/wgconfig", dirs_exist_ok=True)
    box.write("/usr/bin/wgsyncd", WRAPPER, 0o755)
    for unit in ("wgsyncd.service", "wgsyncd-sync.service", "wgsyncd-sync.timer", "wgsyncd-sync.path"):
        box.write(f"/etc/systemd/system/{unit}", (REPO / "systemd" / unit).read_text())
    box.write(
        "/etc/wgsyncd/wgsyncd.toml",
        f'host_id = "{host_id}"\n'
        "[kernel]\nenabled = false\n"  # no WireGuard module in a container: nothing to read
        "[wgrest]\nenabled = false\n"
        f'[database]\ndsn = "{tcp_dsn}"\nstatement_timeout = 30\nauto_migrate = true\n'
        "[daemon]\ninterval = 1\njitter = 0\nbackoff_initial = 1\nbackoff_max = 2\n",
        0o600,
    )
    box.write(
        "/etc/wireguard/wg0.conf",
        f"[Interface]\nPrivateKey = {PRIVATE_KEY}\nListenPort = 51820\nAddress = 192.0.2.1/24\n",
        0o600,
    )
    # a broken file: its error is logged with WG_INTERFACE=wgbad and makes cycles partial
    box.write("/etc/wireguard/wgbad.conf", "[Interface]\nPrivateKey = notakey\n", 0o600)
    box.run("chmod", "700", "/etc/wireguard")
    box.run("systemctl", "daemon-reload")
    box.run("wgsyncd", "check-config")
    yield Installed(box, dsn, host_id)
    box.run("systemctl", "stop", "wgsyncd", "wgsyncd-sync.timer", "wgsyncd-sync.path", check=False)


def test_start_reaches_running_with_status(installed: Installed) -> None:
    box = installed.box
    box.run("systemctl", "start", "wgsyncd", timeout=90)  # Type=notify: returns after READY=1
    assert box.unit_property("wgsyncd", "ActiveState") == "active"
    assert box.unit_property("wgsyncd", "SubState") == "running"
    status = box.run("systemctl", "status", "wgsyncd", "--no-pager", check=False).stdout
    print(status)
    assert "active (running)" in status
    assert 'Status: "synced 1 interface, 0 peers in ' in status, status
    assert "partial: 1 source error" in status
    rows = installed.query(
        "SELECT name FROM interfaces WHERE host_id = %s AND removed_at IS NULL", installed.host_id
    )
    assert rows == [("wg0",)]


def test_journal_has_structured_fields(installed: Installed) -> None:
    box = installed.box
    if box.unit_property("wgsyncd", "ActiveState") != "active":
        box.run("systemctl", "start", "wgsyncd", timeout=90)
    entries = box.wait_for(
        "a cycle's entry in the journal",
        lambda: [e for e in installed.journal("wgsyncd") if str(e.get("MESSAGE", "")).startswith("synced")],
    )
    cycle = entries[-1]
    assert cycle["SYSLOG_IDENTIFIER"] == "wgsyncd"
    assert cycle["WGSYNCD_HOST"] == installed.host_id
    assert len(cycle["SYNC_ID"]) == 32
    assert cycle["PRIORITY"] == "4"  # partial: warning
    assert cycle["WGSYNCD_SYNC_STATUS"] == "partial"
    assert cycle["CODE_FUNC"] == "_cycle_done"
    bad = [e for e in installed.journal("wgsyncd") if e.get("WG_INTERFACE") == "wgbad"]
    assert bad and "wgbad.conf" in bad[0]["MESSAGE"] and bad[0]["PRIORITY"] == "3"
    assert bad[0]["SYNC_ID"]  # the error belongs to a cycle
    everything = box.run("journalctl", "-o", "json", "--no-pager").stdout
    assert PRIVATE_KEY not in everything


def test_timer_fires_the_oneshot(installed: Installed) -> None:
    box = installed.box
    box.run("systemctl", "stop", "wgsyncd")
    before = installed.syncs()
    installed.drop_in(
        "wgsyncd-sync.timer",
        "[Timer]\nOnBootSec=\nOnUnitInactiveSec=\nOnActiveSec=1s\nRandomizedDelaySec=0\n",
    )
    try:
        box.run("systemctl", "start", "wgsyncd-sync.timer")
        box.wait_for(
            "the timer to run wgsyncd-sync.service",
            lambda: (
                box.unit_property("wgsyncd-sync.service", "ExecMainExitTimestampMonotonic") not in ("", "0")
            ),
        )
        assert box.unit_property("wgsyncd-sync.service", "Result") == "success"
        assert box.unit_property("wgsyncd-sync.service", "ExecMainStatus") == "4"  # partial = success
        assert installed.syncs() == before + 1
    finally:
        box.run("systemctl", "stop", "wgsyncd-sync.timer")
        installed.drop_in("wgsyncd-sync.timer", None)


def test_path_fires_when_etc_wireguard_changes(installed: Installed) -> None:
    box = installed.box
    box.run("systemctl", "start", "wgsyncd-sync.path")
    try:
        assert box.unit_property("wgsyncd-sync.path", "ActiveState") == "active"
        box.write(
            "/etc/wireguard/wg1.conf",
            f"[Interface]\nPrivateKey = {PRIVATE_KEY}\nListenPort = 51821\n",
            0o600,
        )
        box.wait_for(
            "wg1 in the database after the conf change",
            lambda: installed.query(
                "SELECT 1 FROM interfaces WHERE host_id = %s AND name = 'wg1'", installed.host_id
            ),
        )
    finally:
        box.run("systemctl", "stop", "wgsyncd-sync.path")


def test_hung_database_trips_the_watchdog_and_restarts(installed: Installed) -> None:
    import psycopg

    box = installed.box
    installed.drop_in("wgsyncd.service", "[Service]\nWatchdogSec=3s\nRestartSec=1s\nLimitCORE=0\n")
    locker = psycopg.connect(installed.dsn)
    try:
        box.run("systemctl", "restart", "wgsyncd", timeout=90)
        first_pid = box.unit_property("wgsyncd", "MainPID")
        restarts = int(box.unit_property("wgsyncd", "NRestarts"))
        # every next cycle blocks on the lock (statement_timeout 30 s > WatchdogSec): pings stop.
        # `hosts`: every cycle upserts its row, even an idle one that reads no other table
        locker.execute("LOCK TABLE hosts IN ACCESS EXCLUSIVE MODE")
        t0 = time.monotonic()
        box.wait_for(
            "Result=watchdog in the journal",
            lambda: any(
                "Failed with result 'watchdog'" in str(e.get("MESSAGE", ""))
                for e in installed.journal("wgsyncd")
            ),
            timeout=30,
        )
        elapsed = time.monotonic() - t0
        assert elapsed >= 2.0, "the watchdog cannot fire before WatchdogSec without pings"
        messages = [str(e.get("MESSAGE", "")) for e in installed.journal("wgsyncd")]
        assert any("Watchdog timeout" in m for m in messages)
        assert any("timeout" in m and "not below half of WatchdogSec" in m for m in messages)
        locker.rollback()  # the database answers again
        box.wait_for(
            "the restarted daemon to run",
            lambda: (
                int(box.unit_property("wgsyncd", "NRestarts")) > restarts
                and box.unit_property("wgsyncd", "SubState") == "running"
            ),
            timeout=30,
        )
        assert box.unit_property("wgsyncd", "MainPID") != first_pid
    finally:
        locker.close()
        installed.drop_in("wgsyncd.service", None)
        box.run("systemctl", "stop", "wgsyncd", check=False)


def test_sigterm_via_systemctl_stop_is_clean(installed: Installed) -> None:
    box = installed.box
    box.run("systemctl", "start", "wgsyncd", timeout=90)
    box.run("systemctl", "stop", "wgsyncd", timeout=60)
    assert box.unit_property("wgsyncd", "Result") == "success"
    assert box.unit_property("wgsyncd", "ExecMainStatus") == "0"
    assert any(str(e.get("MESSAGE", "")).startswith("stopped after") for e in installed.journal("wgsyncd"))


def test_broken_config_fails_naming_the_key_and_stops_retrying(installed: Installed) -> None:
    box = installed.box
    good = box.run("cat", "/etc/wgsyncd/wgsyncd.toml").stdout
    box.write("/etc/wgsyncd/wgsyncd.toml", good.replace("interval = 1\n", 'interval = "soon"\n'), 0o600)
    installed.drop_in("wgsyncd.service", "[Service]\nRestartSec=100ms\n")
    box.run("systemctl", "stop", "wgsyncd")
    box.run("systemctl", "reset-failed", "wgsyncd", check=False)  # a fresh start-limit counter
    try:
        res = box.run("systemctl", "start", "wgsyncd", check=False, timeout=60)
        assert res.returncode != 0
        box.wait_for(
            "the start limit to end the retries",
            lambda: any(
                "Start request repeated too quickly" in str(e.get("MESSAGE", ""))
                for e in installed.journal("wgsyncd")
            ),
            timeout=60,
        )
        box.wait_for("the unit to be failed", lambda: box.unit_property("wgsyncd", "ActiveState") == "failed")
        assert int(box.unit_property("wgsyncd", "NRestarts")) < 12
        messages = [str(e.get("MESSAGE", "")) for e in installed.journal("wgsyncd")]
        assert any(m.startswith("wgsyncd: config: daemon.interval:") for m in messages)
    finally:
        box.write("/etc/wgsyncd/wgsyncd.toml", good, 0o600)
        installed.drop_in("wgsyncd.service", None)
        box.run("systemctl", "reset-failed", "wgsyncd", check=False)


def test_unconfigured_install_is_skipped_not_failed(installed: Installed) -> None:
    box = installed.box
    box.run("mv", "/etc/wgsyncd/wgsyncd.toml", "/etc/wgsyncd/wgsyncd.toml.off")
    try:
        res = box.run("systemctl", "start", "wgsyncd", check=False, timeout=60)
        assert res.returncode == 0
        assert box.unit_property("wgsyncd", "ConditionResult") == "no"
        assert box.unit_property("wgsyncd", "ActiveState") == "inactive"
        assert box.unit_property("wgsyncd", "Result") == "success"
    finally:
        box.run("mv", "/etc/wgsyncd/wgsyncd.toml.off", "/etc/wgsyncd/wgsyncd.toml")
