"""`wgsyncd run` against a real NOTIFY_SOCKET, a real PostgreSQL and real signals.

The daemon runs as a child process (``python -m wgsyncd run``) exactly as systemd
would start it: NOTIFY_SOCKET points at a datagram socket this test binds and
reads, WATCHDOG_USEC asks for pings, signals are real. Hangs are real too: a TCP
server that accepts and never answers, and a table locked by another session.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from wgsyncd import config, daemon, heartbeat

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- pure helpers


def test_backoff_doubles_and_is_capped() -> None:
    cfg = config.DaemonConfig(backoff_initial=5, backoff_max=60)
    assert [daemon.backoff_delay(cfg, n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
    assert daemon.backoff_delay(cfg, 10_000) == 60  # no overflow after a long outage


def test_heap_settles_at_most_hourly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector stops re-scanning the long-lived state: frozen after a cycle, hourly."""
    import gc

    def collected() -> set[int]:
        """The ids of what the collector still scans (frozen objects are in none of its generations)."""
        return {id(o) for o in gc.get_objects()}

    monkeypatch.setattr(daemon, "_next_settle", 0.0)
    try:
        assert daemon.settle_heap() is True
        frozen = gc.get_freeze_count()
        assert frozen > 0
        keep = [[i] for i in range(1000)]  # new long-lived objects: not frozen until the next settle
        assert daemon.settle_heap() is False and gc.get_freeze_count() == frozen
        assert {id(k) for k in keep} <= collected()
        monkeypatch.setattr(daemon, "_next_settle", 0.0)  # an hour later
        # (the count alone is no proof: the settle also frees what died since, frozen or not)
        assert daemon.settle_heap() is True and not {id(k) for k in keep} & collected()
    finally:
        gc.unfreeze()


def test_interval_jitter_stays_in_range() -> None:
    cfg = config.DaemonConfig(interval=60, jitter=0.1)
    rng = random.Random(7)
    values = [daemon.next_interval(cfg, rng) for _ in range(500)]
    assert min(values) >= 54 and max(values) <= 66
    assert max(values) - min(values) > 6  # it really spreads
    assert daemon.next_interval(config.DaemonConfig(interval=30, jitter=0), rng) == 30


def test_watchdog_interval_only_for_this_pid() -> None:
    assert daemon.watchdog_interval({"WATCHDOG_USEC": "3000000"}) == 3.0
    assert daemon.watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}) == 3.0
    assert daemon.watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}) is None
    assert daemon.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert daemon.watchdog_interval({}) is None


def test_timeouts_not_below_half_the_watchdog_are_named() -> None:
    cfg = config.Config()
    cfg.database.statement_timeout = 20
    cfg.database.connect_timeout = 4
    cfg.wgrest.timeout = 10
    cfg.kernel.timeout = 10
    assert daemon.timeout_warnings(cfg, None) == []
    assert daemon.timeout_warnings(cfg, 60) == []
    warnings = daemon.timeout_warnings(cfg, 30)
    assert len(warnings) == 1 and warnings[0].startswith("database.statement_timeout: 20 s")
    assert {w.split(":")[0] for w in daemon.timeout_warnings(cfg, 10)} == {
        "database.statement_timeout",
        "wgrest.timeout",
        "kernel.timeout",
    }


# ---------------------------------------------------------------- the notify socket


@dataclass
class Notification:
    """One datagram the daemon sent, with when it arrived."""

    at: float
    fields: dict[str, str]


@dataclass
class NotifySocket:
    """A bound AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

    path: Path
    sock: socket.socket
    received: list[Notification] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _stop: bool = False

    @classmethod
    def bind(cls, path: Path) -> NotifySocket:
        """Bind and start a reader thread that timestamps every datagram."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.settimeout(0.2)
        ns = cls(path, sock)
        threading.Thread(target=ns._read, daemon=True).start()
        return ns

    def _read(self) -> None:
        """Collect datagrams until closed."""
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._cond:
                self.received.append(Notification(time.monotonic(), fields))
                self._cond.notify_all()

    def wait_for(
        self, what: str, pred: Callable[[Notification], bool], timeout: float = 15.0, start: int = 0
    ) -> int:
        """Index of the first notification from ``start`` on matching ``pred``; fails at the deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.received)):
                    if pred(self.received[i]):
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [n.fields for n in self.received[start:]][-8:]
                    raise AssertionError(f"no {what} within {timeout} s; last notifications: {seen}")
                self._cond.wait(left)

    def has(self, key: str, value: str | None = None) -> Callable[[Notification], bool]:
        """Predicate: the notification carries ``key`` (with ``value`` when given)."""
        return lambda n: key in n.fields and (value is None or n.fields[key] == value)

    def status_startswith(self, prefix: str) -> Callable[[Notification], bool]:
        """Predicate: STATUS= begins with ``prefix``."""
        return lambda n: n.fields.get("STATUS", "").startswith(prefix)

    def snapshot(self) -> list[Notification]:
        """A copy of what arrived so far."""
        with self._cond:
            return list(self.received)

    def close(self) -> None:
        """Stop the reader and close the socket."""
        self._stop = True
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    """A fresh NOTIFY_SOCKET for one daemon."""
    ns = NotifySocket.bind(tmp_path / "notify.sock")
    yield ns
    ns.close()


# ---------------------------------------------------------------- the daemon process


def write_config(path: Path, dsn: str, host_id: str, **overrides: object) -> None:
    """A config with every source off (a cycle is then pure DB work) and test-sized timings."""
    db = {"connect_timeout": 3.0, "statement_timeout": 10.0, "auto_migrate": "true"}
    dm = {
        "interval": 60.0,
        "jitter": 0.0,
        "backoff_initial": 1.0,
        "backoff_max": 2.0,
        "state_dir": f'"{path.parent / "state"}"',
    }
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        {"database": db, "daemon": dm}[section][name] = value
    lines = [
        f'host_id = "{host_id}"',
        'log_level = "debug"',
        "[kernel]\nenabled = false",
        "[conf]\nenabled = false",
        "[wgrest]\nenabled = false",
        "[database]",
        f'dsn = "{dsn}"',
        *[f"{k} = {v}" for k, v in db.items()],
        "[daemon]",
        *[f"{k} = {v}" for k, v in dm.items()],
        "[metrics]",
        'textfile = ""',  # never the host's node_exporter directory
    ]
    path.write_text("\n".join(lines) + "\n")


@dataclass
class DaemonProc:
    """A running `wgsyncd run` child and its stderr log file."""

    proc: subprocess.Popen
    log_path: Path
    started: float

    def log(self) -> str:
        """Everything the daemon logged so far."""
        return self.log_path.read_text()

    def signal(self, signum: int) -> None:
        """Send a real signal."""
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        """The exit code; fails (after killing it) if the daemon does not exit in time."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"daemon did not exit within {timeout} s; log:\n{self.log()[-3000:]}"
            ) from None


@pytest.fixture
def start_daemon(tmp_path: Path, notify: NotifySocket) -> Iterator[Callable[..., DaemonProc]]:
    """Start `python -m wgsyncd --config X run` with our NOTIFY_SOCKET (and WATCHDOG_USEC)."""
    procs: list[DaemonProc] = []

    def start(cfg_path: Path, watchdog_usec: int | None = None) -> DaemonProc:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WGSYNCD_", "WATCHDOG_", "JOURNAL_"))}
        env["NOTIFY_SOCKET"] = str(notify.path)
        env["PYTHONPATH"] = str(REPO)
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        log_path = tmp_path / f"daemon{len(procs)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "wgsyncd", "--config", str(cfg_path), "run"],
                cwd=str(REPO),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        dp = DaemonProc(proc, log_path, time.monotonic())
        procs.append(dp)
        return dp

    yield start
    for dp in procs:
        if dp.proc.poll() is None:
            dp.proc.kill()
            dp.proc.wait()


def poll(what: str, check: Callable[[], object], timeout: float = 15.0) -> object:
    """Poll ``check`` until truthy (a condition with a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def query(dsn: str, sql: str, params: tuple = ()) -> list[tuple]:
    """One autocommit query from an independent session."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture
def db(pg_cluster) -> str:
    """A fresh, migrated database's DSN."""
    import psycopg

    from wgsyncd import store

    dsn = pg_cluster.create_database()
    with psycopg.connect(dsn) as conn:
        store.migrate(conn)
    return dsn


def host() -> str:
    """A host_id no other test uses."""
    return "daemon-test-" + uuid.uuid4().hex[:10]


# ---------------------------------------------------------------- the tests


@pytest.mark.postgres
def test_ready_once_and_status_after_every_cycle(
    tmp_path: Path, db: str, notify: NotifySocket, start_daemon: Callable[..., DaemonProc]
) -> None:
    host_id = host()
    cfg = tmp_path / "wgsyncd.toml"
    write_config(cfg, db, host_id, daemon__interval=0.3)
    d = start_daemon(cfg)
    first = notify.wait_for("first STATUS", notify.status_startswith("synced 0 interfaces, 0 peers in "))
    ready = notify.wait_for("READY=1", notify.has("READY", "1"))
    assert ready > first, "READY=1 must come after the first cycle was tried"
    assert notify.received[first].fields["STATUS"].endswith("; DB ok")
    third = notify.wait_for("3 cycles", lambda n: "STATUS" in n.fields, start=ready + 1)
    third = notify.wait_for("3 cycles", lambda n: "STATUS" in n.fields, start=third + 1)
    rows = poll(
        "3 sync_status rows",
        lambda: (
            (r := query(db, "SELECT count(*) FROM sync_status WHERE host_id=%s", (host_id,))[0][0]) >= 3 and r
        ),
    )
    assert rows >= 3
    assert sum(1 for n in notify.snapshot() if n.fields.get("READY") == "1") == 1
    beat = heartbeat.read(str(tmp_path / "state"))  # what `wgsyncd status --local` checks
    assert beat.status == "ok" and beat.summary.startswith("synced 0 interfaces") and beat.problem() is None
    d.signal(signal.SIGTERM)
    assert d.wait_exit(10) == 0
    notify.wait_for("STOPPING=1", notify.has("STOPPING", "1"))
    assert "synced 0 interfaces" in d.log()


@pytest.mark.postgres
def test_watchdog_cadence_and_an_immediate_stop_while_sleeping(
    tmp_path: Path, db: str, notify: NotifySocket, start_daemon: Callable[..., DaemonProc]
) -> None:
    cfg = tmp_path / "wgsyncd.toml"
    write_config(cfg, db, host(), daemon__interval=600.0)  # one cycle, then a long sleep
    d = start_daemon(cfg, watchdog_usec=1_000_000)  # WatchdogSec=1s: ping every 0.5 s
    ready = notify.wait_for("READY=1", notify.has("READY", "1"))
    notify.wait_for("7th ping", lambda n: n.fields.get("WATCHDOG") == "1", start=ready + 7, timeout=10)
    pings = [n.at for n in notify.snapshot()[ready:] if n.fields.get("WATCHDOG") == "1"]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) < 0.9, f"pings must keep a half-WatchdogSec cadence, gaps {gaps}"
    assert min(gaps) > 0.3, f"pings come from the loop's sleep slices, not a busy loop: {gaps}"
    statuses = [n for n in notify.snapshot() if "STATUS" in n.fields]
    assert len(statuses) == 1, "one cycle only: pings in the sleep are not cycles"
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(5) == 0
    assert time.monotonic() - t0 < 2.0, "SIGTERM must cut the 600 s sleep short at once"
    notify.wait_for("STOPPING=1", notify.has("STOPPING", "1"))


class SilentServer:
    """A TCP server that accepts connections and never says a word: a hung database."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        """Accept and hold every connection, read nothing, answer nothing."""
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        """Drop everything."""
        self._stop = True
        for c in self.accepted:
            c.close()
        self.sock.close()


@pytest.mark.postgres
def test_pings_stop_while_the_db_hangs_then_backoff(
    tmp_path: Path, notify: NotifySocket, start_daemon: Callable[..., DaemonProc]
) -> None:
    server = SilentServer()
    try:
        cfg = tmp_path / "wgsyncd.toml"
        dsn = f"host=127.0.0.1 port={server.port} dbname=x user=x"
        write_config(cfg, dsn, host(), database__connect_timeout=4.0)
        d = start_daemon(cfg, watchdog_usec=2_000_000)  # pings every 1 s while healthy
        first = notify.wait_for(
            "backoff STATUS", notify.status_startswith("DB unreachable, retry in 1 s"), timeout=20
        )
        assert server.accepted, "the daemon never reached the silent server"
        # nothing at all was sent while the connect hung: no ping, no READY
        assert notify.received[first].at - d.started >= 3.5
        assert all("WATCHDOG" not in n.fields for n in notify.received[:first])
        assert notify.received[first].fields.get("WATCHDOG") == "1", "a backoff step is progress"
        notify.wait_for("READY=1 after the first tried cycle", notify.has("READY", "1"), start=first)
        second = notify.wait_for(
            "second backoff",
            notify.status_startswith("DB unreachable, retry in 2 s"),
            start=first + 1,
            timeout=20,
        )
        pings = [n.at for n in notify.snapshot()[first : second + 1] if n.fields.get("WATCHDOG") == "1"]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) >= 3.5, f"pings must stop for the whole hang (> WatchdogSec=2s): gaps {gaps}"
        log = d.log()
        assert "database.connect_timeout: 4 s is not below half of WatchdogSec (1 s)" in log
        assert "DB unreachable" in log
        d.signal(signal.SIGTERM)
        assert d.wait_exit(10) == 0
    finally:
        server.close()


@pytest.mark.postgres
def test_backoff_then_recovery_when_the_database_appears(
    tmp_path: Path, pg_cluster, notify: NotifySocket, start_daemon: Callable[..., DaemonProc]
) -> None:
    name = "t_late_" + uuid.uuid4().hex[:8]
    dsn = pg_cluster.dsn(name)
    cfg = tmp_path / "wgsyncd.toml"
    write_config(cfg, dsn, host(), daemon__backoff_initial=0.5, daemon__backoff_max=1.0)
    d = start_daemon(cfg)
    first = notify.wait_for("DB unreachable", notify.status_startswith("DB unreachable, retry in"))
    notify.wait_for(
        "capped backoff", notify.status_startswith("DB unreachable, retry in 1 s"), start=first + 1
    )
    pg_cluster.admin(f'CREATE DATABASE "{name}"')  # the database comes back: auto_migrate, then sync
    notify.wait_for("recovery", notify.status_startswith("synced 0 interfaces"), start=first + 1, timeout=20)
    d.signal(signal.SIGINT)
    assert d.wait_exit(10) == 0
    assert "does not exist" in d.log()


@pytest.mark.postgres
def test_sigterm_mid_cycle_rolls_back_and_exits_0(
    tmp_path: Path, db: str, notify: NotifySocket, start_daemon: Callable[..., DaemonProc]
) -> None:
    import psycopg

    host_id = host()
    cfg = tmp_path / "wgsyncd.toml"
    write_config(cfg, db, host_id, database__statement_timeout=120.0)
    locker = psycopg.connect(db)
    try:
        # the cycle upserts its hosts row, then blocks reading `interfaces`: mid-transaction
        locker.execute("LOCK TABLE interfaces IN ACCESS EXCLUSIVE MODE")
        d = start_daemon(cfg)
        poll(
            "the daemon's transaction to block on the lock",
            lambda: query(
                db,
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'wgsyncd' "
                "AND wait_event_type = 'Lock' AND state = 'active'",
            ),
        )
        assert query(db, "SELECT count(*) FROM hosts WHERE host_id=%s", (host_id,))[0][0] == 0
        d.signal(signal.SIGTERM)
        assert d.wait_exit(10) == 0
        notify.wait_for("STOPPING=1", notify.has("STOPPING", "1"), timeout=2)
        assert not any(n.fields.get("READY") == "1" for n in notify.snapshot())
    finally:
        locker.rollback()
        locker.close()
    # the abandoned backend notices its client is gone once the lock is free, and aborts
    poll(
        "the daemon's backend to go away",
        lambda: not query(db, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'wgsyncd'"),
    )
    assert query(db, "SELECT count(*) FROM hosts WHERE host_id=%s", (host_id,))[0][0] == 0
    assert query(db, "SELECT count(*) FROM sync_status WHERE host_id=%s", (host_id,))[0][0] == 0
    assert "SIGTERM during a cycle: abandoned it" in d.log()


@pytest.mark.postgres
def test_sighup_broken_config_keeps_the_old_one_and_says_why(
    tmp_path: Path, db: str, notify: NotifySocket, start_daemon: Callable[..., DaemonProc]
) -> None:
    old_host, new_host = host(), host()
    cfg = tmp_path / "wgsyncd.toml"
    write_config(cfg, db, old_host, daemon__interval=0.5)
    d = start_daemon(cfg)
    ready = notify.wait_for("READY=1", notify.has("READY", "1"))

    cfg.write_text(cfg.read_text().replace("interval = 0.5", 'interval = "soon"'))
    d.signal(signal.SIGHUP)
    reloading = notify.wait_for("RELOADING=1", notify.has("RELOADING", "1"), start=ready + 1)
    assert int(notify.received[reloading].fields["MONOTONIC_USEC"]) > 0
    back = notify.wait_for("READY=1 after the failed reload", notify.has("READY", "1"), start=reloading)
    assert "daemon.interval" in notify.received[back].fields["STATUS"]
    # still syncing, with the old config (old host_id, 0.5 s interval)
    notify.wait_for("a cycle after the failed reload", notify.status_startswith("synced"), start=back + 1)
    assert "config reload failed, keeping the running config: daemon.interval: " in d.log()

    write_config(cfg, db, new_host, daemon__interval=0.5)
    d.signal(signal.SIGHUP)
    again = notify.wait_for("second reload", notify.has("RELOADING", "1"), start=back + 1)
    ok = notify.wait_for("READY=1", notify.has("READY", "1"), start=again)
    assert notify.received[ok].fields["STATUS"] == "config reloaded"
    poll(
        "a cycle with the new host_id",
        lambda: query(db, "SELECT 1 FROM sync_status WHERE host_id=%s", (new_host,)),
    )
    assert query(db, "SELECT count(*) FROM sync_status WHERE host_id=%s", (old_host,))[0][0] >= 2
    d.signal(signal.SIGTERM)
    assert d.wait_exit(10) == 0


def test_broken_config_at_start_exits_78_naming_the_key(
    tmp_path: Path, notify: NotifySocket, start_daemon: Callable[..., DaemonProc]
) -> None:
    cfg = tmp_path / "wgsyncd.toml"
    write_config(cfg, "host=/nonexistent dbname=x", host(), daemon__backoff_max=-1)
    d = start_daemon(cfg)
    assert d.wait_exit(15) == daemon.EXIT_CONFIG
    assert "daemon.backoff_max: must be greater than 0" in d.log()
    notify.wait_for("STATUS with the error", notify.status_startswith("config error: daemon.backoff_max"))
    assert not any("READY" in n.fields for n in notify.snapshot())


def test_missing_dsn_is_a_config_error(
    tmp_path: Path, notify: NotifySocket, start_daemon: Callable[..., DaemonProc]
) -> None:
    cfg = tmp_path / "wgsyncd.toml"
    cfg.write_text(f'host_id = "{host()}"\n')
    d = start_daemon(cfg)
    assert d.wait_exit(15) == daemon.EXIT_CONFIG
    assert "database.dsn: not set" in d.log()


@pytest.mark.postgres
def test_a_refused_write_is_recorded_and_the_next_cycle_recovers(
    tmp_path: Path, db: str, notify: NotifySocket, start_daemon: Callable[..., DaemonProc]
) -> None:
    import psycopg

    host_id = host()
    cfg = tmp_path / "wgsyncd.toml"
    # statement_timeout 1 s -> the store's lock_timeout 0.5 s: a locked table fails the write fast
    write_config(cfg, db, host_id, database__statement_timeout=1.0, daemon__interval=0.5)
    locker = psycopg.connect(db)
    try:
        locker.execute("LOCK TABLE interfaces IN ACCESS EXCLUSIVE MODE")
        d = start_daemon(cfg)
        # retry within the interval (0.5 s): while the write fails the cycles go to the spool
        failed = notify.wait_for("a failed write", notify.status_startswith("DB write failed, retry in 0 s"))
        assert notify.received[failed].fields.get("WATCHDOG") == "1"
    finally:
        locker.rollback()
        locker.close()
    notify.wait_for("recovery", notify.status_startswith("synced 0 interfaces"), start=failed + 1)
    rows = query(db, "SELECT status, message FROM sync_status WHERE host_id=%s ORDER BY id", (host_id,))
    assert rows[0][0] == "failed" and "lock timeout" in rows[0][1], rows
    assert any(r[0] == "ok" for r in rows[1:]), rows
    assert "DB write failed" in d.log()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(10) == 0
