"""The CLI at a glance: a table and progress on a real terminal (a pty), plain lines when piped."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_daemon import write_config
from wgsyncd import render

pytestmark = pytest.mark.postgres
REPO = Path(__file__).resolve().parents[1]


def run_on_terminal(*args: str) -> tuple[int, str]:
    """Run ``wgsyncd ARGS`` with stdout and stderr on a pseudo-terminal; (exit code, everything shown)."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WGSYNCD_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "wgsyncd", *args],
        stdout=slave,
        stderr=slave,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=REPO,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode()


def run_piped(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``wgsyncd ARGS`` with stdout and stderr as pipes (a script, a log collector)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WGSYNCD_")}
    return subprocess.run(
        [sys.executable, "-m", "wgsyncd", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )


def test_status_is_a_table_on_a_terminal_and_key_value_lines_in_a_pipe(tmp_path: Path, pg_cluster) -> None:
    cfg = tmp_path / "wgsyncd.toml"
    write_config(cfg, pg_cluster.create_database(), "host-terminal")
    code, shown = run_on_terminal("--config", str(cfg), "sync")
    assert code == 0, shown
    assert "\rsync: writing 0 interfaces, 0 peers to the database" in shown  # progress, then erased
    assert "\r\x1b[K" in shown
    piped_sync = run_piped("--config", str(cfg), "sync")
    assert "\r" not in piped_sync.stdout + piped_sync.stderr  # no progress in a pipe or the journal

    code, shown = run_on_terminal("--config", str(cfg), "status")
    lines = [line for line in shown.replace("\r\n", "\n").splitlines() if line.strip()]
    assert (
        code == 0
        and lines[0].split()
        == ["HOST_ID", "STARTED_AT", "STATUS", "INTERFACES", "PEERS", "DURATION_MS", "ROWS_WRITTEN"][
            : len(lines[0].split())
        ]
    )
    assert len(lines) == 3 and all(line.startswith("host-terminal") for line in lines[1:])
    status_col = lines[0].index("STATUS")
    assert all(line[status_col:].startswith("ok") for line in lines[1:])  # aligned under its header

    piped = run_piped("--config", str(cfg), "status")
    assert piped.returncode == 0 and piped.stdout.splitlines()[0].startswith("host_id=host-terminal")
    assert "status=ok" in piped.stdout and "HOST_ID" not in piped.stdout


def test_table_aligns_numbers_right_and_text_left() -> None:
    rows = [
        {"host_id": "a", "peers": 5, "status": "ok", "started_at": "2026-11-27T12:00:00.123456+00:00"},
        {"host_id": "longer-host", "peers": 12000, "status": "partial", "started_at": None},
    ]
    text = render.table(rows, ("host_id", "started_at", "status", "peers", "absent"))
    head, first, second = text.splitlines()
    assert head.split() == ["HOST_ID", "STARTED_AT", "STATUS", "PEERS"]
    assert first.startswith("a" + " " * 12 + "2026-11-27 12:00:00  ok") and first.endswith("    5")
    assert second.startswith("longer-host  -  ") and second.endswith("12000")
    assert len({len(line) for line in (head, first, second)}) == 1
