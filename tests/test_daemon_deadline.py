"""Issue 16 item 6: a silent database fails the cycle within its deadline, and
`status --local` / STATUS= tell a stuck database, a stuck loop and an unwritable
state directory apart; recording a failed cycle reacts to SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import test_daemon as _td
from tests.beds import unavailable
from tests.test_daemon import REPO, DaemonProc, NotifySocket, host, poll, query, write_config
from wgsyncd import heartbeat, signing

db, notify, start_daemon = _td.db, _td.notify, _td.start_daemon  # the daemon tests' fixtures


def status_local(state_dir: Path) -> tuple[int, dict]:
    """`wgsyncd status --local --json` against ``state_dir``: (exit code, answer)."""
    env = {"PATH": "/usr/bin:/bin", "WGSYNCD_DAEMON_STATE_DIR": str(state_dir), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "wgsyncd", "--config", "/dev/null", "status", "--local", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=str(REPO),
    )
    return proc.returncode, json.loads(proc.stdout)


def backends(dsn: str) -> list[int]:
    """PIDs of the daemon's server processes."""
    return [r[0] for r in query(dsn, "SELECT pid FROM pg_stat_activity WHERE application_name = 'wgsyncd'")]


def postmaster(dsn: str) -> int:
    """PID of the server's postmaster (first line of postmaster.pid in its data directory)."""
    (datadir,) = query(dsn, "SHOW data_directory")[0]
    return int((Path(datadir) / "postmaster.pid").read_text().split()[0])


@pytest.mark.postgres
def test_a_silent_server_fails_the_cycle_within_the_deadline(
    tmp_path: Path, db: str, notify: NotifySocket, start_daemon: Callable[..., DaemonProc]
) -> None:
    cfg = tmp_path / "wgsyncd.toml"
    write_config(cfg, db, host(), database__statement_timeout=2.0, daemon__interval=0.5)
    d = start_daemon(cfg)
    first = notify.wait_for("first sync", notify.status_startswith("synced 0 interfaces"))
    pids = backends(db)
    assert len(pids) == 1
    # the postmaster too: a reconnect after the failed cycle must not reach a live server
    # before the status is checked (the whole server is silent, not one backend)
    pids.append(postmaster(db))
    for pid in pids:  # the server process is there, the socket open, and it never answers
        os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        failed = notify.wait_for(
            "the deadline", notify.status_startswith("DB unreachable"), start=first + 1, timeout=30
        )
        took = notify.received[failed].at - t0
        # statement_timeout 2 s + 5 s margin, plus at most one interval before the cycle began
        assert 6.0 < took < 9.5, took
        log = d.log()
        assert "no answer within 7 s (client-side deadline" in log, log[-2000:]
        code, answer = status_local(tmp_path / "state")
        assert code == 1 and answer["problem"].startswith("database failing for"), answer
        assert "stuck" not in answer["problem"]
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    notify.wait_for("recovery", notify.status_startswith("synced 0 interfaces"), start=failed + 1, timeout=30)
    assert status_local(tmp_path / "state")[0] == 0
    d.signal(signal.SIGTERM)
    assert d.wait_exit(10) == 0


@pytest.mark.postgres
def test_sigterm_while_recording_a_failed_cycle_exits_at_once(
    tmp_path: Path, db: str, notify: NotifySocket, start_daemon: Callable[..., DaemonProc]
) -> None:
    import psycopg

    host_id = host()
    cfg = tmp_path / "wgsyncd.toml"
    # lock_timeout = 3 s: the write fails on `interfaces`, then record_failure waits on sync_status
    write_config(cfg, db, host_id, database__statement_timeout=6.0)
    locker = psycopg.connect(db)
    try:
        locker.execute("LOCK TABLE interfaces, sync_status IN ACCESS EXCLUSIVE MODE")
        d = start_daemon(cfg)
        poll(
            "record_failure to block on sync_status",
            lambda: query(
                db,
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'wgsyncd' "
                "AND wait_event_type = 'Lock' AND query LIKE '%%INSERT INTO sync_status%%'",
            ),
            timeout=20,
        )
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        assert d.wait_exit(10) == 0
        assert time.monotonic() - t0 < 2.0, "SIGTERM must not wait for record_failure"
    finally:
        locker.rollback()
        locker.close()
    assert "SIGTERM during a cycle: abandoned it" in d.log()
    assert query(db, "SELECT count(*) FROM sync_status WHERE host_id=%s", (host_id,))[0][0] == 0


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "256k") -> Iterator[Path]:
    """A real, tiny filesystem (root only): fill it or remount it read-only."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        unavailable("tmpfs", "mounting a filesystem needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)])
    if proc.returncode != 0:
        unavailable("tmpfs", "mount -t tmpfs failed")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.postgres
@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_unwritable_state_dir_is_a_warning_once_and_not_a_stuck_loop(
    tmp_path: Path, db: str, notify: NotifySocket, start_daemon: Callable[..., DaemonProc], fault: str
) -> None:
    state = tmp_path / "state"
    with small_tmpfs(state):
        cfg = tmp_path / "wgsyncd.toml"
        write_config(cfg, db, host(), daemon__interval=0.3)
        if fault == "read-only":  # e.g. a volume remounted ro after the host's first start
            heartbeat.write(str(state), heartbeat.Heartbeat(time.time() - 3600, "ok", "synced", 0.3))
            signing.load_or_create(str(state))  # made on that first start; read-only from now on
            subprocess.run(["mount", "-o", "remount,ro", str(state)], check=True)
        d = start_daemon(cfg)
        first = notify.wait_for("first sync", notify.status_startswith("synced 0 interfaces"))
        if fault == "full":
            assert heartbeat.read(str(state)).status == "ok"
            with contextlib.suppress(OSError), open(state / "filler", "wb") as fh:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
                    os.fsync(fh.fileno())
        want = "Read-only file system" if fault == "read-only" else "No space left on device"
        seen = notify.wait_for(
            "STATUS naming the state dir", lambda n: want in n.fields.get("STATUS", ""), start=first
        )
        assert notify.received[seen].fields["STATUS"].startswith("synced 0 interfaces")
        # a few more cycles: still syncing, and the warning was logged once, not per cycle
        notify.wait_for("more cycles", lambda n: want in n.fields.get("STATUS", ""), start=seen + 3)
        log = d.log()
        assert log.count("cannot write the last-cycle file") == 1, log[-3000:]
        line = next(x for x in log.splitlines() if "cannot write the last-cycle file" in x)
        assert "warning" in line.lower() and want in line, line
        # a heartbeat that stays old: status --local must blame the directory, not the loop
        beat = heartbeat.read(str(state))
        problem = beat.problem(now=beat.time + 10_000, state_dir_error=heartbeat.probe_writable(str(state)))
        assert problem and problem.startswith("state directory not writable") and want in problem
        if fault == "read-only":
            code, answer = status_local(state)
            assert code == 1 and answer["problem"].startswith("state directory not writable"), answer
        d.signal(signal.SIGTERM)
        assert d.wait_exit(10) == 0


def test_problem_tells_stuck_database_stuck_loop_and_state_dir_apart() -> None:
    now = 10_000.0
    beat = heartbeat.Heartbeat(
        now - 5, "ok", "synced", 60, phase="database", phase_since=now - 100, db_budget=25
    )
    assert beat.problem(now).startswith("stuck database")
    beat = heartbeat.Heartbeat(now - 1000, "ok", "synced", 60, phase="reading", phase_since=now - 990)
    assert "the loop is stuck or stopped" in beat.problem(now)
    assert beat.problem(now, state_dir_error="x: Read-only file system").startswith(
        "state directory not writable"
    )
    beat = heartbeat.Heartbeat(now - 5, "failed", "DB unreachable (x)", 60, db_failing_since=now - 50)
    beat.spool_depth, beat.spool_oldest = 3, now - 40
    assert beat.problem(now) == "database failing for 50 s: DB unreachable (x); spool: 3 cycles, oldest 40 s"


def test_spool_keys_are_validated_and_the_shipped_file_loads(tmp_path: Path) -> None:
    from wgsyncd import config

    cfg = config.load(str(REPO / "config" / "wgsyncd.toml"), environ={})
    assert (cfg.daemon.spool_max_mb, cfg.daemon.spool_max_age) == (256.0, 604800.0)
    for key, value, needle in (
        ("WGSYNCD_DAEMON_SPOOL_MAX_MB", "-1", "daemon.spool_max_mb"),
        ("WGSYNCD_DAEMON_SPOOL_MAX_AGE", "0", "daemon.spool_max_age"),
    ):
        with pytest.raises(config.ConfigError, match=needle):
            config.load(None, environ={key: value})
    assert config.load(None, environ={"WGSYNCD_DAEMON_SPOOL_MAX_MB": "0"}).daemon.spool_max_mb == 0


def test_healthy_line_shows_the_spool(tmp_path: Path) -> None:
    now = time.time()
    beat = heartbeat.Heartbeat(now, "ok", "synced 1 interface", 60, spool_depth=2, spool_oldest=now - 90)
    heartbeat.write(str(tmp_path), beat)
    code, answer = status_local(tmp_path)
    assert code == 0 and answer["spool_depth"] == 2 and answer["healthy"] is True
    env = {"PATH": "/usr/bin:/bin", "WGSYNCD_DAEMON_STATE_DIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "wgsyncd", "--config", "/dev/null", "status", "--local"],
        capture_output=True, text=True, env=env, timeout=60, cwd=str(REPO),
    )  # fmt: skip
    assert proc.stdout.startswith("healthy: synced 1 interface; spool: 2 cycles, oldest 9"), proc.stdout
