"""The fault scenarios: each breaks one real part and returns the figures it measured.

Every scenario takes a started Rig, a size ``n`` (kills, signals...) and a seeded
random source, and returns a Row. The pytest short form (test_faults.py) asserts
on the rows; `make faults` (python -m tests.faults) runs them bigger and prints
the table the README shows. Sleeps here are fault parameters (how long an outage
lasts, where in a cycle a kill lands), never synchronisation: every wait for the
daemon polls a condition (rig.poll).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.faults.rig import Rig, poll
from wgsyncd import signing


@dataclass
class Row:
    """One line of the table."""

    scenario: str
    runs: int = 0
    rows_equal_dump: str = "-"
    partial: int = 0
    totals_equal_deltas: str = "-"
    bytes_lost: str = "-"
    versions_lost: str = "-"
    recovery: str = "-"
    crashes: int = 0
    log_line: str = ""
    extra: dict[str, object] = field(default_factory=dict)


def yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def seconds(values: list[float]) -> str:
    """``median / max s`` of a list of durations."""
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} / {max(values):.1f} s"


def add_peers(rig: Rig, count: int) -> None:
    """Give the interface ``count`` more (silent) peers, so a cycle's transaction is not trivial."""
    from tests.beds.wireguard import _run, random_key

    blocks = "".join(
        f"[Peer]\nPublicKey = {random_key()}\nAllowedIPs = 10.{100 + i // 250}.{i % 250}.1/32\n"
        for i in range(count)
    )
    path = Path(rig.bed.tmpdir) / "extra.conf"
    path.write_text(blocks)
    _run("wg", "addconf", rig.a.name, str(path))
    path.unlink()


def check_traffic(rig: Rig) -> tuple[bool, int, int]:
    """(totals = sum of deltas, bytes lost rx, bytes lost tx) for the tunnel peer."""
    rx_t, tx_t, rx_d, tx_d = rig.db_totals(rig.b_pub)
    true_rx, true_tx = rig.truth(rig.b_pub)
    return (rx_t, tx_t) == (rx_d, tx_d), true_rx - rx_t, true_tx - tx_t


def finish(rig: Rig, row: Row) -> Row:
    """The end-of-run figures every scenario shares: a quiet cycle, then compare with WireGuard."""
    if rig.alive():
        rig.wait_cycles(2, status="ok")
    row.rows_equal_dump = yes(rig.rows_match_dump())
    row.partial = rig.partial_cycles() + rig.duplicate_cycles()
    equal, lost_rx, lost_tx = check_traffic(rig)
    row.totals_equal_deltas = yes(equal)
    row.extra.setdefault("lost_rx", lost_rx)
    row.extra.setdefault("lost_tx", lost_tx)
    if row.bytes_lost == "-":
        row.bytes_lost = f"{lost_rx + lost_tx}"
    logs = rig.logs()
    row.crashes += logs.count("Traceback") + logs.count("cycle crashed")
    if "Traceback" in logs:  # what an operator would send us: the first one, in full
        row.extra["traceback"] = logs[logs.index("Traceback") :][:2000]
    return row


# ---------------------------------------------------------------- PostgreSQL killed


def pg_kills(rig: Rig, n: int, rng: random.Random) -> Row:
    """PostgreSQL killed n times (immediate / SIGKILL alternating), a third aimed inside a transaction."""
    add_peers(rig, 300)
    rig.start_daemon()
    rig.wait_synced(0)
    recoveries: list[float] = []
    inside = 0
    added: list[str] = []
    watcher = psycopg.connect(rig.dsn, autocommit=True)
    for i in range(n):
        how = "immediate" if i % 2 == 0 else "sigkill"
        rig.ping(2)
        added.append(rig.transient_peer())  # a config change every time
        hit = False
        if i % 3 == 0:  # aim inside the daemon's transaction: poll its backend from an open session
            deadline = time.monotonic() + 4 * rig.interval
            while time.monotonic() < deadline and not hit:
                rows = watcher.execute(
                    "SELECT state FROM pg_stat_activity WHERE application_name = 'wgsyncd'"
                ).fetchall()
                hit = bool(rows) and rows[0][0] in ("active", "idle in transaction")
        else:
            time.sleep(rng.uniform(0, rig.interval))  # a random point of the cycle
        inside += hit
        rig.kill_pg(how)
        watcher.close()
        time.sleep(rng.uniform(0.2, 1.5))  # the outage
        rig.start_pg()
        restarted = time.time()
        recoveries.append(rig.wait_synced(restarted) - restarted)
        watcher = psycopg.connect(rig.dsn, autocommit=True)
    watcher.close()
    row = Row(f"PostgreSQL killed (immediate+SIGKILL, {inside} in a transaction)", runs=n)
    row.recovery = seconds(recoveries)
    seen = set().union(*rig.versions())
    row.versions_lost = str(sum(key not in seen for key in added))
    row.log_line = rig.first_line("DB unreachable", "DB write failed")
    row.crashes = 0 if rig.alive() else 1
    row.extra["inside"] = inside
    return finish(rig, row)


# ---------------------------------------------------------------- a server that never answers


def silent_db(rig: Rig, n: int, rng: random.Random) -> Row:
    """Every PostgreSQL process SIGSTOPped (accepts, never answers) for longer than the deadline."""
    rig.start_daemon()
    rig.wait_synced(0)
    budget = rig.statement_timeout + 5.0
    failed_after: list[float] = []
    recoveries: list[float] = []
    for _ in range(n):
        pids = rig.server_pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        stopped = time.time()
        try:
            beat = poll(
                "the deadline to fail the cycle",
                lambda stopped=stopped: (b := rig.beat()) and b.status == "failed" and b.time > stopped and b,
                timeout=budget + 3 * rig.interval + 15,
            )
            failed_after.append(beat.time - stopped)
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        resumed = time.time()
        recoveries.append(rig.wait_synced(resumed) - resumed)
    row = Row("DB accepts, never answers (SIGSTOP)", runs=n)
    row.recovery = f"fails after {seconds(failed_after)} (deadline {budget:g} s); back {seconds(recoveries)}"
    row.log_line = rig.first_line("no answer within")
    row.extra["failed_after"] = failed_after
    row.extra["budget"] = budget
    return finish(rig, row)


# ---------------------------------------------------------------- the spool's target


def outage_with_resets(rig: Rig, n: int, rng: random.Random) -> Row:
    """A DB outage with traffic, a peer added and removed, wireguard-go restarted, a peer re-added.

    Each reset here comes after a cycle read the counters, so the target is 0 bytes
    lost; the last one (``n`` > 1) lands right after a burst, without a read in
    between: at most that burst may be lost (one interval's traffic).
    """
    rig.start_daemon()
    rig.ping(3)
    rig.wait_synced(0)
    rig.kill_pg("immediate")
    down = time.time()
    rig.ping(5)
    rig.wait_cycles(2)
    transient = rig.transient_peer()
    rig.wait_cycles(2)
    rig.a.remove_peer(transient)
    rig.wait_cycles(2)
    rig.ping(5)
    rig.wait_cycles(2)
    rig.restart_interface()  # reset 1: a new wireguard-go, a new TUN (ifindex)
    rig.ping(15)  # the new counters grow past the stored ones
    rig.wait_cycles(2)
    rig.readd_peer(wait=lambda: rig.wait_cycles(2))  # reset 2: the peer removed, then back
    rig.ping(15)
    rig.wait_cycles(2)
    resets, burst = 2, 0
    for _ in range(max(0, n - 1)):  # unobserved resets: a burst, then a restart before any read
        before = sum(rig.counters().get(rig.b_pub, (0, 0)))
        rig.ping(3)
        burst += sum(rig.counters().get(rig.b_pub, (0, 0))) - before
        rig.restart_interface()
        rig.ping(10)
        rig.wait_cycles(2)
        resets += 1
    depth = rig.beat().spool_depth  # type: ignore[union-attr]
    outage = time.time() - down
    rig.start_pg()
    restarted = time.time()
    recovery = rig.wait_synced(restarted) - restarted
    versions = rig.versions()
    lost_versions = 0
    lost_versions += not any(transient in v for v in versions)  # the transient peer is in the history
    lost_versions += not any(rig.b_pub not in v for v in versions)  # so is the tunnel peer's removal
    row = Row(f"DB outage {outage:.0f} s: {resets} counter resets, a transient peer", runs=1)
    row.versions_lost = str(lost_versions)
    row.recovery = f"{recovery:.1f} s ({depth} cycles replayed)"
    row.log_line = rig.first_line("replayed")
    row.extra.update(resets=resets, burst=burst, spooled=depth, outage=outage)
    row = finish(rig, row)
    lost = row.extra["lost_rx"] + row.extra["lost_tx"]  # type: ignore[operator]
    row.bytes_lost = f"{lost} of {sum(rig.truth(rig.b_pub))} (unobserved bursts: {burst})"
    return row


def interface_recreated(rig: Rig, n: int, rng: random.Random) -> Row:
    """wireguard-go restarted n times while syncing; each time the new counters outgrow the stored ones."""
    rig.start_daemon()
    rig.wait_synced(0)
    for _ in range(n):
        rig.ping(3)
        rig.wait_cycles(2)
        rig.restart_interface()
        rig.ping(10)
        rig.wait_cycles(2)
    row = Row("interface deleted and recreated (counters outgrow the stored ones)", runs=n)
    row = finish(rig, row)
    row.bytes_lost = f"{row.extra['lost_rx'] + row.extra['lost_tx']} of {sum(rig.truth(rig.b_pub))}"  # type: ignore[operator]
    return row


# ---------------------------------------------------------------- signals


def sigterm_cycles(rig: Rig, n: int, rng: random.Random) -> Row:
    """SIGTERM n times, half of them aimed inside the daemon's transaction; started again each time.

    An aimed run changes the configuration first (a config version over 300 peers: a
    transaction worth aiming at) and signals the moment the daemon's backend is busy.
    """
    add_peers(rig, 300)
    exits: list[float] = []
    bad = 0
    bad_exits: list[str] = []
    with psycopg.connect(rig.dsn, autocommit=True) as watcher:
        for i in range(n):
            rig.ping(2)
            aim = i % 2 == 1
            if aim:
                rig.transient_peer()
            # only this run's backend: the last run's may still be finishing the statement it was
            # abandoned in, and signalling on it would hit the new daemon before its handlers exist
            since = watcher.execute("SELECT clock_timestamp()").fetchone()[0]
            rig.start_daemon()
            if aim:

                def busy(since: object = since) -> bool:
                    rows = watcher.execute(
                        "SELECT state FROM pg_stat_activity WHERE application_name = 'wgsyncd'"
                        " AND backend_start > %s",
                        (since,),
                    ).fetchall()
                    return bool(rows) and rows[0][0] in ("active", "idle in transaction")

                poll("the daemon's transaction", busy, timeout=20, every=0.0005)
            else:
                rig.wait_cycles(1)
                time.sleep(rng.uniform(0, rig.interval))  # a random point of the next cycle
            code, took = rig.stop_daemon(signal.SIGTERM)
            bad += code != 0
            if code != 0:  # keep the evidence: which run, aimed or not, its exit code and last words
                tail = rig.log_path.read_text()[-600:]
                bad_exits.append(f"run {i} ({'aimed' if aim else 'random'}): exit {code}; log ends: {tail}")
            exits.append(took)
    rig.start_daemon()
    inside = rig.logs().count("during a cycle: abandoned it")
    row = Row(f"SIGTERM at random points of a cycle ({inside} inside one)", runs=n)
    row.recovery = f"exit in {seconds(exits)}"
    row.crashes = bad
    row.log_line = rig.first_line("abandoned it") or rig.first_line("stopped after")
    row.extra["inside"] = inside
    row.extra["bad_exits"] = bad_exits
    return finish(rig, row)


def sigterm_replay(rig: Rig, n: int, rng: random.Random) -> Row:
    """A spool of cycles; SIGTERM while it is being replayed, n times; then it finishes."""
    add_peers(rig, 300)
    rig.start_daemon()
    rig.wait_synced(0)
    rig.kill_pg("immediate")
    transient = ""
    for i in range(max(12, 4 * n)):
        rig.ping(1)
        if i == 3:
            transient = rig.transient_peer()
        if i == 6:
            rig.a.remove_peer(transient)
        rig.wait_cycles(1)
    spooled = rig.beat().spool_depth  # type: ignore[union-attr]
    interrupted = 0
    exits: list[float] = []
    for _ in range(n):
        rig.stop_daemon(signal.SIGTERM)
        rig.start_pg()
        before = rig.query("SELECT count(*) FROM sync_status")[0][0]
        target = before + rng.randint(1, 3)
        rig.start_daemon()
        with psycopg.connect(rig.dsn, autocommit=True) as watch:

            def progressed(target: int = target) -> bool:
                return watch.execute("SELECT count(*) FROM sync_status").fetchone()[0] >= target  # type: ignore[index]

            poll("replay to start", progressed, timeout=60, every=0.002)
        _code, took = rig.stop_daemon(signal.SIGTERM)
        exits.append(took)
        interrupted += (rig.beat().spool_depth or 0) > 0  # type: ignore[union-attr]
        rig.kill_pg("immediate")
    rig.start_pg()
    rig.start_daemon()
    rig.wait_synced(time.time())
    row = Row(f"SIGTERM during a spool replay ({spooled} cycles)", runs=n)
    row.versions_lost = str(int(not any(transient in v for v in rig.versions())))
    row.recovery = f"exit in {seconds(exits)}; {interrupted} cut mid-replay"
    row.log_line = rig.first_line("replayed")
    row.extra.update(spooled=spooled, interrupted=interrupted)
    return finish(rig, row)


# ---------------------------------------------------------------- the state directory


def state_dir_fault(rig: Rig, n: int, rng: random.Random, fault: str) -> Row:
    """The state directory on a small tmpfs, filled up or remounted read-only while syncing."""
    rig.state_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(rig.state_dir)], check=True
    )
    try:
        if fault == "read-only":  # after the host's first start made its signing key
            signing.load_or_create(str(rig.state_dir))
            subprocess.run(["mount", "-o", "remount,ro", str(rig.state_dir)], check=True)
        rig.start_daemon()
        if fault == "full":
            rig.wait_synced(0)
            try:
                with open(rig.state_dir / "filler", "wb") as fh:
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
            except OSError:
                pass

        def synced() -> int:
            try:
                return int(rig.query("SELECT count(*) FROM sync_status WHERE status = 'ok'")[0][0])
            except psycopg.errors.UndefinedTable:  # not migrated yet
                return 0

        before = poll("a first synced cycle", synced)
        poll(f"{n} more synced cycles", lambda: synced() >= before + n)
        repo = str(Path(__file__).resolve().parents[2])
        env = {"PATH": "/usr/bin:/bin", "WGSYNCD_DAEMON_STATE_DIR": str(rig.state_dir), "PYTHONPATH": repo}
        proc = subprocess.run(
            [sys.executable, "-m", "wgsyncd", "--config", "/dev/null", "status", "--local"],
            capture_output=True, text=True, cwd=repo, env=env,
        )  # fmt: skip
        row = Row(f"state dir {fault}", runs=n)
        row.log_line = rig.first_line("cannot write the last-cycle file")
        row.extra["status_local"] = (proc.stdout + proc.stderr).strip()
        row.recovery = f"status --local: {row.extra['status_local'][:70]}"
        row.extra["warnings"] = rig.logs().count("cannot write the last-cycle file")
        row.rows_equal_dump = yes(rig.rows_match_dump())
        row.partial = rig.partial_cycles()
        row.crashes = 0 if rig.alive() else 1
        rig.stop_daemon()
        return row
    finally:
        subprocess.run(["umount", "-l", str(rig.state_dir)], check=False)
