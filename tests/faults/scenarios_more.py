"""Faults at the sources rather than the database: wgrest flapping (a source that answered
before and now refuses is an error, and rewrites no row) and a conf file rewritten in place
while it is read (read again until stable, never half)."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.faults.rig import REPO, Rig, poll
from tests.faults.scenarios import Row, finish


def _peer_versions(rig: Rig) -> int:
    """Sum of the interface's peer row versions: each rewrite of a row adds one."""
    rows = rig.query("SELECT coalesce(sum(version), 0) FROM peers WHERE host_id = %s", (rig.host_id,))
    return int(rows[0][0])


def _statuses(rig: Rig, since: float) -> dict[str, int]:
    rows = rig.query(
        "SELECT status, count(*) FROM sync_status WHERE host_id = %s AND started_at > to_timestamp(%s) "
        "GROUP BY 1",
        (rig.host_id, since),
    )
    return {r[0]: int(r[1]) for r in rows}


def wgrest_flapping(rig: Rig, n: int, rng: random.Random, port: int = 51899) -> Row:
    """wgrest (optional = true, the default) killed and started again n times while syncing."""
    cmd = [
        "ip",
        "netns",
        "exec",
        rig.a.netns,
        sys.executable,
        "-m",
        "tests.faults.wgrest_proc",
        rig.a.name,
        str(port),
    ]
    url = f'[wgrest]\nurl = "http://127.0.0.1:{port}"\ntimeout = 2.0\ndata_dir = ""\n'
    rig.config.write_text(rig.config.read_text().replace("[wgrest]\nenabled = false\n", url))

    def start() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            cmd, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "serving"
        return proc

    server = start()
    try:
        rig.start_daemon()
        rig.wait_synced(0)
        rig.wait_cycles(2)
        before, since = _peer_versions(rig), time.time()
        for _ in range(n):
            server.kill()
            server.wait()
            rig.wait_cycles(2)
            server = start()
            rig.wait_cycles(2)
        rewrites = _peer_versions(rig) - before
        statuses = _statuses(rig, since)
        row = Row("wgrest flapping (optional = true)", runs=n)
        row.versions_lost = f"{rewrites} peer row rewrites"
        row.recovery = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) + " cycles"
        row.log_line = rig.first_line("wgrest", "answered before")
        row.extra.update(rewrites=rewrites, statuses=statuses)
        # wgrest is back: the next cycles are ok again (while it is away they are partial,
        # which is the point: a wgrest that answered before and now refuses is an error)
        row = finish(rig, row)
        row.extra["partial_while_away"] = row.partial
        row.partial = 0 if set(statuses) <= {"ok", "partial"} else row.partial
        return row
    finally:
        server.kill()
        server.wait()


def conf_rewritten_in_place(rig: Rig, n: int, rng: random.Random) -> Row:
    """The interface's conf file truncated and rewritten in place, in chunks, during n cycles."""
    conf_dir = rig.tmp / "etc-wireguard"
    conf_dir.mkdir(mode=0o700)
    conf = conf_dir / f"{rig.a.name}.conf"
    text = rig.a.showconf()
    conf.write_text(text)
    conf.chmod(0o600)
    cfg = rig.config.read_text().replace("[conf]\nenabled = false\n", f'[conf]\ndirectory = "{conf_dir}"\n')
    rig.config.write_text(cfg)
    rig.start_daemon()
    rig.wait_synced(0)
    rig.wait_cycles(2)
    versions_before = len(rig.versions())
    stop = threading.Event()
    rewrites = [0]

    def rewrite() -> None:
        data = text.encode()
        step = max(1, len(data) // 8)
        while not stop.is_set():
            with open(conf, "r+b") as fh:  # truncate + write, as an editor or a script would
                fh.truncate(0)
                for i in range(0, len(data), step):
                    fh.write(data[i : i + step])
                    fh.flush()
                    time.sleep(0.002)
            rewrites[0] += 1
            # a save every 0.2 s (an eager editor or a script in a loop): between saves the file
            # is stable and must be read whole; during one it must be read again, never half
            stop.wait(0.2)

    since = time.time()
    writer = threading.Thread(target=rewrite, daemon=True)
    writer.start()
    try:
        rig.wait_cycles(n, timeout=120)
    finally:
        stop.set()
        writer.join()
    rig.wait_cycles(2)
    statuses = _statuses(rig, since)
    made = len(rig.versions()) - versions_before
    row = Row("conf file rewritten in place during reads", runs=n)
    row.versions_lost = f"{made} versions from torn reads"
    row.recovery = (
        ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) + f" cycles; {rewrites[0]} rewrites"
    )
    row.log_line = rig.first_line(str(conf))
    row.extra.update(statuses=statuses, torn_versions=made)
    return finish(rig, row)


del Path, poll
