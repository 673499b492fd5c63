"""Through a real pgbouncer 1.18 in transaction mode (issue 14 item 1).

The bed (tests/beds/pgbouncer.py) pools 2 server connections per database, round
robin, so several clients really share server connections and one client's
consecutive transactions land on different ones. First the failure the issue
reports, on the old connection settings; then the limits, held per transaction;
then the e2e suite's scenarios (sync, idle + change, concurrent hosts, restore,
daemon cycles) with the agent's DSN pointing at pgbouncer. The tests' own checks
read PostgreSQL directly, independent of the pooler.

`wgsyncd db migrate` works through the pooler too: it locks the schema_migrations
table inside each migration's transaction, never a session advisory lock. The agents
run with ``auto_migrate = false``, as hosts (their own roles) always do.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import test_e2e, test_restore, test_store_concurrency
from tests.beds.host import Host
from tests.beds.pgbouncer import PgBouncer
from tests.beds.postgres import PgCluster, synthetic_state
from tests.beds.wireguard import PeerSpec, random_key
from wgsyncd import store
from wgsyncd.config import DatabaseConfig

pytestmark = [pytest.mark.postgres, pytest.mark.pgbouncer]


def migrated(cluster: PgCluster) -> str:
    """A fresh database, migrated over a direct connection; its direct DSN."""
    dsn = cluster.create_database()
    with psycopg.connect(dsn) as conn:
        store.migrate(conn)
    return dsn


def dbname(dsn: str) -> str:
    """The dbname of a conninfo."""
    from psycopg.conninfo import conninfo_to_dict

    return str(conninfo_to_dict(dsn)["dbname"])


def xacts(bouncer: PgBouncer, db: str) -> int:
    """Transactions pgbouncer has passed to ``db`` so far (SHOW STATS)."""
    return sum(int(r["total_xact_count"]) for r in bouncer.show("STATS") if r["database"] == db)


def write(conn: Any, state: Any) -> store.WriteReport:
    """One cycle with a fresh sync id."""
    return store.write_cycle(
        conn, state, sync_id=uuid.uuid4(), started_at=datetime.now(UTC), agent_version="t"
    )


def backend(conn: Any) -> int:
    """The backend pid serving one transaction of ``conn``, in a transaction of its own."""
    with conn.transaction():
        return int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])


@pytest.fixture
def pgb_config(pg_cluster: PgCluster, pgbouncer: PgBouncer) -> DatabaseConfig:
    """A migrated database reached through pgbouncer, its pool already holding 2 server connections."""
    dsn = migrated(pg_cluster)
    assert len(pgbouncer.fill_pool(dbname(dsn))) == 2
    return DatabaseConfig(dsn=pgbouncer.route(dsn), connect_timeout=5.0, statement_timeout=20.0)


@pytest.fixture
def small_bouncer(pg_cluster: PgCluster) -> Iterator[Callable[..., PgBouncer]]:
    """Start extra pgbouncers with other settings (one server connection, ignored parameters)."""
    started: list[tuple[PgBouncer, str]] = []

    def start(**kwargs: Any) -> PgBouncer:
        base = tempfile.mkdtemp(prefix="wgs-pgb-", dir="/tmp")
        bouncer = PgBouncer.start(base, pg_cluster, **kwargs)
        started.append((bouncer, base))
        return bouncer

    yield start
    for bouncer, base in started:
        bouncer.stop()
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- the reported failure


def test_old_settings_fail_with_duplicate_prepared_statement_new_ones_pass(
    pg_cluster: PgCluster, small_bouncer: Callable[..., PgBouncer]
) -> None:
    """The old connect(): startup options (refused by a stock pgbouncer; dropped when ignored,
    so the limits vanish) and psycopg's prepared statements, which clash once two clients
    share a server connection. store.connect() through the same pooler: every cycle passes."""
    dsn = migrated(pg_cluster)
    stock = small_bouncer(pool_size=1)
    old = " options='-c statement_timeout=7500 -c lock_timeout=3750'"
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter: options"):
        psycopg.connect(stock.route(dsn) + old)
    lenient = small_bouncer(pool_size=1, ignore_startup_parameters="options")
    a, b = psycopg.connect(lenient.route(dsn) + old), psycopg.connect(lenient.route(dsn) + old)
    try:
        assert a.execute("SHOW statement_timeout").fetchone() == ("0",)  # the limit silently vanished
        a.rollback()
        with pytest.raises(store.StoreError, match="DuplicatePreparedStatement"):
            for i in range(10):
                write(a, synthetic_state("host-a", peers=20, counters=1000 + i))
                write(b, synthetic_state("host-b", peers=20, counters=1000 + i))
    finally:
        a.close()
        b.close()
    cfg = DatabaseConfig(dsn=lenient.route(dsn), statement_timeout=7.5)
    with store.connect(cfg) as a, store.connect(cfg) as b:
        for i in range(10):
            changed = synthetic_state("host-a", peers=20 + i, counters=2000 + i)  # a config change each time
            assert write(a, changed).status == "ok"
            assert write(b, synthetic_state("host-b", peers=20 + i, counters=2000 + i)).status == "ok"
        with a.transaction():
            assert a.execute("SHOW statement_timeout").fetchone() == ("7500ms",)
    with psycopg.connect(dsn) as direct:
        assert direct.execute("SELECT count(*) FROM peers WHERE removed_at IS NULL").fetchone() == (
            2 * 2 * 29,
        )  # 2 hosts x 2 interfaces


def test_db_migrate_through_pgbouncer_leaves_no_lock(
    pg_cluster: PgCluster, small_bouncer: Callable[..., PgBouncer]
) -> None:
    bouncer = small_bouncer(pool_size=3)  # 3: the lock and the unlock land on different ones
    dsn = pg_cluster.create_database()
    assert len(bouncer.fill_pool(dbname(dsn))) == 3
    cfg = DatabaseConfig(dsn=bouncer.route(dsn), statement_timeout=2.0)
    for _ in range(3):
        with store.connect(cfg) as conn:
            store.migrate(conn)
    with psycopg.connect(dsn) as direct:
        assert direct.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone() == (0,)


# ---------------------------------------------------------------- limits per transaction


def test_limits_are_in_force_in_every_transaction_and_never_leak(
    pg_cluster: PgCluster, pgbouncer: PgBouncer, pgb_config: DatabaseConfig
) -> None:
    pgb_config.statement_timeout = 1.0  # lock_timeout 500 ms
    conn = store.connect(pgb_config)
    try:
        pids = set()
        for _ in range(4):  # explicit transactions, then implicit ones: every one has the limits
            with conn.transaction():
                pids.add(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
                got = conn.execute(
                    "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), "
                    "current_setting('TimeZone')"
                ).fetchone()
                assert got == ("1s", "500ms", "UTC")
        for _ in range(4):
            pids.add(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
            assert conn.execute("SHOW statement_timeout").fetchone() == ("1s",)
            conn.commit()
        assert len(pids) == 2  # consecutive transactions really ran on both server connections
        with pytest.raises(psycopg.errors.QueryCanceled), conn.transaction():
            conn.execute("SELECT pg_sleep(30)")  # the statement timeout is in force
        write(conn, synthetic_state("host-a", peers=10))
        with psycopg.connect(pg_cluster.dsn(dbname(pgb_config.dsn or ""))) as blocker:
            blocker.execute("LOCK TABLE peers IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(store.StoreError, match="LockNotAvailable"):  # lock_timeout, not 1 s
                write(conn, synthetic_state("host-a", peers=9))
            blocker.rollback()
        assert (
            write(conn, synthetic_state("host-a", peers=9)).tables["peers"].removed == 2
        )  # one per interface
    finally:
        conn.close()
    # another client of the same server connections sees PostgreSQL's defaults: nothing leaked
    with psycopg.connect(pgb_config.dsn or "", prepare_threshold=None) as other:
        seen = {}
        for _ in range(4):
            pid, stmt, lock = other.execute(
                "SELECT pg_backend_pid(), current_setting('statement_timeout'), "
                "current_setting('lock_timeout')"
            ).fetchone()  # type: ignore[misc]
            other.commit()
            seen[pid] = (stmt, lock)
        assert set(seen) == pids and set(seen.values()) == {("0", "0")}


def test_a_host_role_logs_in_as_itself(pg_cluster: PgCluster, pgbouncer: PgBouncer) -> None:
    """Per-host database roles survive the pooler: the server session is the client's role."""
    dsn = migrated(pg_cluster)
    role = "pgb_" + uuid.uuid4().hex[:8]
    pg_cluster.admin(f"CREATE ROLE {role} LOGIN")
    pgbouncer.add_user(role)
    with store.connect(DatabaseConfig(dsn=pgbouncer.dsn(dbname(dsn), user=role))) as conn:
        assert conn.execute("SELECT session_user, current_user").fetchone() == (role, role)


# ---------------------------------------------------------------- the store under a shared pool


def test_kept_view_is_exact_when_transactions_change_server_connection(pgb_config: DatabaseConfig) -> None:
    """The view of the last commit is per client connection; its proof (hosts.last_sync_id,
    read under the host's lock) is in the database, so rotating server connections change nothing."""
    from wgsyncd.store import known

    with store.connect(pgb_config) as conn, store.connect(pgb_config) as other:
        write(conn, synthetic_state("host-a"))
        known.forget(conn)
        cold = write(conn, synthetic_state("host-a"))
        before = backend(conn)
        warm = write(conn, synthetic_state("host-a"))
        # consecutive transactions alternate over the 2 server connections: the write ran on
        # the other one than the probes around it
        after, then = backend(conn), backend(conn)
        assert before == after != then
        assert warm.total_config_rows_written == 0 and warm.round_trips < cold.round_trips
        shrunk = synthetic_state("host-a")
        del shrunk.interfaces["wg0"].peers[next(iter(shrunk.interfaces["wg0"].peers))]
        assert write(other, shrunk).tables["peers"].removed == 1  # another agent, same host_id
        assert write(conn, synthetic_state("host-a")).tables["peers"].updated == 1  # noticed, brought back
        assert write(conn, synthetic_state("host-a")).total_config_rows_written == 0
    with store.connect(pgb_config) as fresh:  # a new process diffs from scratch: nothing left to write
        assert write(fresh, synthetic_state("host-a")).total_config_rows_written == 0


def test_chunked_config_rows_through_the_pooler(
    pgb_config: DatabaseConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big host's config rows go in several statements of one transaction (store/writer.py)."""
    from wgsyncd.store import writer

    monkeypatch.setattr(writer, "CHUNK_ROWS", 7)
    with store.connect(pgb_config) as conn:
        first = write(conn, synthetic_state("host-a", interfaces=2, peers=60))
        assert first.tables["peers"].inserted == 120
        assert len(store.load_peers(conn, "host-a")) == 120
        changed = synthetic_state("host-a", interfaces=2, peers=60, counters=9999)
        del changed.interfaces["wg1"]
        assert write(conn, changed).tables["peers"].removed == 60
        assert write(conn, changed).total_config_rows_written == 0


def test_six_hosts_over_two_server_connections(pgb_config: DatabaseConfig, pgbouncer: PgBouncer) -> None:
    """More agents than server connections, each with config changes every cycle: no lost row."""
    hosts = [f"host-{i}" for i in range(6)]
    cycles = 6

    def writer(host: str) -> Callable[[], None]:
        def run() -> None:
            states = [test_store_concurrency.state_for(host, i) for i in range(cycles + 1)]
            with store.connect(pgb_config) as conn:
                for st in states:
                    assert write(conn, st).status == "ok"

        return run

    db = dbname(pgb_config.dsn or "")
    before = xacts(pgbouncer, db)
    assert test_store_concurrency.run_threads([writer(h) for h in hosts], timeout=300) == []
    assert xacts(pgbouncer, db) - before >= len(hosts) * (cycles + 1)
    assert pgbouncer.pool(db)["sv_idle"] + pgbouncer.pool(db)["sv_used"] <= 2
    with store.connect(pgb_config) as conn:
        for host in hosts:
            got = {p.public_key: (p.version, p.removed_at is not None) for p in store.load_peers(conn, host)}
            assert got == test_store_concurrency.expected_peers(host, cycles), host
            assert {r.status for r in store.status(conn, host, limit=100)} == {"ok"}


def test_same_host_from_two_agents_is_serialised(pgb_config: DatabaseConfig) -> None:
    test_store_concurrency.test_same_host_from_two_connections_is_serialised(pgb_config)


# ---------------------------------------------------------------- the e2e scenarios, via the CLI


class ViaPgbouncer:
    """A test host whose agent reaches PostgreSQL through pgbouncer (its config file's DSN);
    ``dsn``, which the tests' checks use, stays direct."""

    agent_dsn = ""
    config: Path
    dsn: str

    def write_config(self, *args: Any, **kwargs: Any) -> None:
        super().write_config(*args, **kwargs)  # type: ignore[misc]
        text = self.config.read_text()
        line = f'dsn = "{self.dsn}"\n'
        assert line in text
        text = text.replace("auto_migrate = true\n", "")  # the agents never migrate here
        self.config.write_text(text.replace(line, f'dsn = "{self.agent_dsn}"\nauto_migrate = false\n'))


class PgbHost(ViaPgbouncer, Host):
    """The e2e Host, through pgbouncer."""


class PgbRestoreHost(ViaPgbouncer, test_restore.RestoreHost):
    """The restore tests' host, through pgbouncer."""


def _via(host: Any, pgbouncer: PgBouncer) -> Any:
    host.agent_dsn = pgbouncer.route(host.dsn)
    assert len(pgbouncer.fill_pool(dbname(host.dsn))) == 2
    return host


@pytest.fixture
def pgb_host(tmp_path: Path, wg_bed: Any, pg_cluster: PgCluster, pgbouncer: PgBouncer) -> PgbHost:
    return _via(PgbHost(tmp_path, wg_bed, migrated(pg_cluster), "host-pgb"), pgbouncer)


@pytest.fixture
def pgb_rhost(tmp_path: Path, wg_bed: Any, pg_cluster: PgCluster, pgbouncer: PgBouncer) -> PgbRestoreHost:
    return _via(PgbRestoreHost(tmp_path, wg_bed, migrated(pg_cluster), "host-pgb-restore"), pgbouncer)


def test_e2e_sync(pgb_host: PgbHost, make_wgrest: Any, pgbouncer: PgBouncer) -> None:
    before = xacts(pgbouncer, dbname(pgb_host.dsn))
    test_e2e.test_sync_500_peers_rows_equal_wg_dump_with_names(pgb_host, make_wgrest)
    assert xacts(pgbouncer, dbname(pgb_host.dsn)) > before  # the agent really went through pgbouncer
    [run] = json.loads(pgb_host.wgsyncd("status", "--json").stdout)  # `wgsyncd status` through it too
    assert (run["host_id"], run["status"]) == (pgb_host.host_id, "ok")


def test_e2e_idle_and_change(pgb_host: PgbHost) -> None:
    test_e2e.test_idle_sync_writes_nothing_and_changes_touch_exactly_their_rows(pgb_host)


def test_e2e_warm_and_cold_cycles(pgb_host: PgbHost, make_wgrest: Any) -> None:
    test_e2e.test_reused_objects_are_never_edited_and_warm_cycles_write_what_cold_ones_do(
        pgb_host, make_wgrest
    )


@pytest.fixture
def recovery(tmp_path: Path) -> tuple[str, str]:
    """(private key file, public key), as in tests/test_restore.py."""
    from wgsyncd import secrets

    path = tmp_path / "recovery.key"
    return str(path), secrets.init_recovery(str(path)).public


def test_e2e_restore_round_trip(pgb_rhost: PgbRestoreHost, recovery: tuple[str, str], tmp_path: Path) -> None:
    test_restore.test_round_trip_300_peers_files_byte_identical_and_dump_equal(pgb_rhost, recovery, tmp_path)
    assert len(test_restore.history(pgb_rhost)) >= 1  # `wgsyncd history` through pgbouncer too


def test_e2e_daemon_cycles_and_a_change(pgb_host: PgbHost, tmp_path: Path, pgbouncer: PgBouncer) -> None:
    """`wgsyncd run` through pgbouncer: cycles, a conf change mid-run, idle cycles after it."""
    name = pgb_host.add_interface(30)
    pgb_host.write_config(f'[daemon]\ninterval = 0.2\njitter = 0.0\nstate_dir = "{tmp_path / "state"}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WGSYNCD_", "NOTIFY_", "WATCHDOG_"))}
    log = tmp_path / "daemon.log"

    def rows(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(pgb_host.dsn) as conn:
            return conn.execute(sql, params).fetchall()

    def cycles() -> list[tuple[str, int]]:
        return rows("SELECT status, config_rows_written FROM sync_status ORDER BY id")  # type: ignore[return-value]

    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wgsyncd", "--config", str(pgb_host.config), "run"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _poll("3 cycles", lambda: len(cycles()) >= 3, proc, log)
        specs = pgb_host.specs[name]
        gone, added = specs[3], PeerSpec(public_key=random_key(), allowed_ips=("10.99.77.1/32",))
        specs.remove(gone)
        specs.append(added)
        pgb_host.apply(name)
        n = len(cycles())
        _poll("the change and 3 idle cycles", lambda: len(cycles()) >= n + 4, proc, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = cycles()
    assert {s for s, _w in done} == {"ok"}, log.read_text()[-3000:]
    written = [w for _s, w in done]
    assert written[0] > 30 and written[-3:] == [0, 0, 0]  # the first cycle wrote all; idle ones nothing
    versions = dict(rows("SELECT public_key, version FROM peers WHERE removed_at IS NULL"))
    assert set(versions) == {p.public_key for p in specs}
    assert set(versions.values()) == {1}  # no spurious rewrite of an unchanged (or the new) peer
    assert rows("SELECT version FROM peers WHERE public_key = %s", (gone.public_key,)) == [(2,)]


def _poll(what: str, check: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``check`` with a deadline (not a sleep as synchronisation); the daemon must stay up."""
    deadline = time.monotonic() + 60
    while not check():
        assert proc.poll() is None, f"daemon exited {proc.returncode}: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within 60 s: {log.read_text()[-3000:]}"
        time.sleep(0.05)
