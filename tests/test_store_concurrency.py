"""Many writers at once against a real PostgreSQL: no deadlock, no lost rows, no half snapshot."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.beds.postgres import fake_key, synthetic_state
from wgsyncd import store
from wgsyncd.config import DatabaseConfig
from wgsyncd.state import HostState, Peer, Source

pytestmark = pytest.mark.postgres

T0 = datetime(2030, 1, 1, tzinfo=UTC)
PEERS = 1000
CYCLES = 20


def state_for(host: str, cycle: int) -> HostState:
    """Cycle 0 is the base; cycle i changes peer i, drops peer 500+i and adds extra peer i."""
    state = synthetic_state(
        host,
        interfaces=1,
        peers=PEERS,
        collected_at=T0 + timedelta(minutes=cycle),
        counters=1000 + 10 * cycle,
    )
    if cycle == 0:
        return state
    peers = state.interfaces["wg0"].peers
    keys = list(peers)
    peers[keys[cycle]].allowed_ips = (f"10.200.{cycle}.1/32",)
    del peers[keys[500 + cycle]]
    extra = fake_key(host, "extra", cycle)
    peers[extra] = Peer(public_key=extra, allowed_ips=(f"10.201.{cycle}.1/32",), seen_by=(Source.KERNEL,))
    return state


def run_threads(targets: list[Callable[[], None]], timeout: float = 120) -> list[BaseException]:
    """Start all, join all with a deadline; return what they raised (a hang is an error too)."""
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            errors.append(TimeoutError("writer thread still running: deadlock or hang"))
    return errors


def expected_peers(host: str, last: int) -> dict[str, tuple[int, bool]]:
    """public key -> (version, removed) after cycles 0..last, from the rules of state_for."""
    keys = list(synthetic_state(host, interfaces=1, peers=PEERS, counters=None).interfaces["wg0"].peers)
    want = {k: (1, False) for k in keys}
    for i in range(1, last + 1):
        want[keys[i]] = (3, False) if i < last else (2, False)
        want[keys[500 + i]] = (3, False) if i < last else (2, True)
        want[fake_key(host, "extra", i)] = (2, True) if i < last else (1, False)
    return want


def test_two_hosts_write_concurrently(db_config: DatabaseConfig, capsys: pytest.CaptureFixture[str]) -> None:
    with store.connect(db_config) as c:
        store.migrate(c)
    hosts = ["host-x", "host-y"]
    reports: dict[str, list[store.WriteReport]] = {h: [] for h in hosts}
    barrier = threading.Barrier(len(hosts))

    def writer(host: str) -> Callable[[], None]:
        def run() -> None:
            states = [state_for(host, i) for i in range(CYCLES + 1)]  # built before the race starts
            with store.connect(db_config) as conn:
                barrier.wait(timeout=30)
                for st in states:
                    reports[host].append(
                        store.write_cycle(
                            conn, st, sync_id=uuid.uuid4(), started_at=datetime.now(UTC), agent_version="t"
                        )
                    )

        return run

    t = time.monotonic()
    errors = run_threads([writer(h) for h in hosts])
    elapsed = time.monotonic() - t
    assert errors == []
    with store.connect(db_config) as conn:
        for host in hosts:
            written = [r.total_config_rows_written for r in reports[host]]
            assert written == [PEERS + 2, 3] + [6] * (CYCLES - 1), host
            rows = store.load_peers(conn, host)
            got = {p.public_key: (p.version, p.removed_at is not None) for p in rows}
            assert got == expected_peers(host, CYCLES), host  # only this host's keys, none lost
            assert {p.host_id for p in rows} == {host}
            runs = store.status(conn, host, limit=100)
            assert len(runs) == CYCLES + 1 and {r.status for r in runs} == {"ok"}
            assert runs[0].sync_id == reports[host][-1].sync_id
            sums = conn.execute(
                "SELECT s.public_key, s.rx_total, s.tx_total, sum(t.rx_delta), sum(t.tx_delta) "
                "FROM peer_stats s JOIN peer_traffic t USING (host_id, interface, public_key) "
                "WHERE s.host_id = %s GROUP BY 1, 2, 3",
                (host,),
            ).fetchall()
            conn.rollback()
            assert len(sums) == PEERS  # the extra peers carry no counters
            assert all(r[1] == r[3] and r[2] == r[4] for r in sums)
    with capsys.disabled():
        print(f"\n2 hosts x {PEERS} peers x {CYCLES + 1} cycles, 2 threads: {elapsed:.2f}s")


def test_same_host_from_two_connections_is_serialised(db_config: DatabaseConfig) -> None:
    """Two agents with one host_id (a misconfiguration) queue on their hosts row lock; nothing is lost."""
    with store.connect(db_config) as c:
        store.migrate(c)
    a, b = state_for("host-z", 0), state_for("host-z", 1)
    by_sync: dict[uuid.UUID, HostState] = {}

    def writer(states: list[HostState]) -> Callable[[], None]:
        def run() -> None:
            with store.connect(db_config) as conn:
                for st in states:
                    sid = uuid.uuid4()
                    by_sync[sid] = st
                    store.write_cycle(conn, st, sync_id=sid, started_at=datetime.now(UTC), agent_version="t")

        return run

    assert run_threads([writer([a, b] * 5), writer([b, a] * 5)]) == []
    with store.connect(db_config) as conn:
        runs = store.status(conn, "host-z", limit=100)
        assert len(runs) == 20
        row = conn.execute("SELECT last_sync_id FROM hosts WHERE host_id = 'host-z'").fetchone()
        conn.rollback()
        assert row is not None
        last = by_sync[row[0]]
        live = {p.public_key for p in store.load_peers(conn, "host-z", include_removed=False)}
        assert live == set(last.interfaces["wg0"].peers)


def test_reader_never_sees_half_a_snapshot(db_config: DatabaseConfig) -> None:
    """A writer swaps 500 of 1,000 peers each cycle; a reader must always count exactly 1,000 live."""
    with store.connect(db_config) as c:
        store.migrate(c)
    first = synthetic_state("host-s", interfaces=1, peers=PEERS)
    second = synthetic_state("host-s", interfaces=1, peers=PEERS)
    peers = second.interfaces["wg0"].peers
    for k in list(peers)[:500]:
        del peers[k]
    for n in range(500):
        key = fake_key("host-s", "swap", n)
        peers[key] = Peer(public_key=key, allowed_ips=(f"10.202.{n // 250}.{n % 250}/32",))
    with store.connect(db_config) as conn:
        store.write_cycle(conn, first, sync_id=uuid.uuid4(), started_at=datetime.now(UTC), agent_version="t")
    done = threading.Event()
    seen: set[int] = set()

    def writer() -> None:
        try:
            with store.connect(db_config) as conn:
                for st in [second, first] * 6:
                    store.write_cycle(
                        conn, st, sync_id=uuid.uuid4(), started_at=datetime.now(UTC), agent_version="t"
                    )
        finally:
            done.set()

    def reader() -> None:
        with psycopg.connect(db_config.dsn or "", autocommit=True) as conn:
            while not done.is_set():
                row: Any = conn.execute(
                    "SELECT count(*) FROM peers WHERE host_id = 'host-s' AND removed_at IS NULL"
                ).fetchone()
                seen.add(int(row[0]))

    assert run_threads([writer, reader]) == []
    assert seen == {PEERS}
