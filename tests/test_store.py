"""The PostgreSQL store against a real PostgreSQL 15 (tests/beds/postgres.py)."""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import shutil
import socket
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.beds.postgres import PgCluster, fake_key, synthetic_state
from wgsyncd import store
from wgsyncd.config import DatabaseConfig
from wgsyncd.memo import Memo
from wgsyncd.state import (
    Drift,
    DriftKind,
    HostState,
    Interface,
    Peer,
    Secret,
    Source,
    SourceError,
    key_fingerprint,
)
from wgsyncd.store import versions
from wgsyncd.store.migrate import MIGRATIONS_DIR

pytestmark = pytest.mark.postgres

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def write(conn: psycopg.Connection[Any], state: HostState) -> store.WriteReport:
    """One cycle with a fresh sync id."""
    return store.write_cycle(
        conn, state, sync_id=uuid.uuid4(), started_at=datetime.now(UTC), agent_version="test"
    )


def snapshot(conn: psycopg.Connection[Any], host_id: str) -> dict[tuple[str, str], tuple[Any, ...]]:
    """(interface, key) -> (version, updated_at, removed_at, row_hash) of every peer row."""
    return {
        (p.interface, p.public_key): (p.version, p.updated_at, p.removed_at, p.row_hash)
        for p in store.load_peers(conn, host_id)
    }


def superuser(cluster: PgCluster, conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """A second, autocommit superuser connection to the same database as ``conn``."""
    return psycopg.connect(cluster.dsn(conn.info.dbname), autocommit=True)


def count(c: psycopg.Connection[Any], table: str) -> int:
    """Rows in ``table`` (committed, seen from ``c``)."""
    row = c.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


# ---------------------------------------------------------------- migrations


ALL_MIGRATIONS = sorted(p.stem for p in MIGRATIONS_DIR.glob("*.sql"))


def test_migrate_twice_is_a_noop(pg_dsn: str) -> None:
    assert ALL_MIGRATIONS[:2] == ["0001_initial", "0002_config_versions"]
    with psycopg.connect(pg_dsn) as c:
        assert store.migrate(c) == ALL_MIGRATIONS
        assert store.migrate(c) == []
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        rows = c.execute("SELECT version, name FROM schema_migrations ORDER BY 1").fetchall()
        assert rows == [(m[:4], m) for m in ALL_MIGRATIONS]


def test_concurrent_migrate_from_two_connections(pg_dsn: str) -> None:
    barrier = threading.Barrier(2)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(pg_dsn) as c:
                barrier.wait(timeout=10)
                results.append(store.migrate(c))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    # each migration is applied exactly once, by one of them (they may take turns: the
    # ledger lock is per migration's transaction, not a session lock)
    assert sorted(results[0] + results[1]) == ALL_MIGRATIONS
    assert all(r == sorted(r) for r in results)


def test_migrate_applies_new_files_and_refuses_edited_ones(pg_dsn: str) -> None:
    tmp = Path(tempfile.mkdtemp())
    try:
        shutil.copy(MIGRATIONS_DIR / "0001_initial.sql", tmp)
        with psycopg.connect(pg_dsn) as c:
            assert store.migrate(c, tmp) == ["0001_initial"]
            (tmp / "0009_extra.sql").write_text("CREATE TABLE extra (x int);")
            assert store.migrate(c, tmp) == ["0009_extra"]
            (tmp / "0009_extra.sql").write_text("CREATE TABLE extra (x bigint);")
            with pytest.raises(store.StoreError, match=r"0009_extra\.sql changed"):
                store.migrate(c, tmp)
            (tmp / "0009_extra.sql").write_text("CREATE TABLE extra (x int);")
            (tmp / "0010_broken.sql").write_text("CREATE TABLE extra (y int);")  # already exists
            with pytest.raises(store.StoreError, match="migrate failed: DuplicateTable"):
                store.migrate(c, tmp)
            versions = [r[0] for r in c.execute("SELECT version FROM schema_migrations ORDER BY 1")]
            assert versions == ["0001", "0009"]
            # the lock was released: another session can take it at once
            (tmp / "0010_broken.sql").unlink()
            with psycopg.connect(pg_dsn) as other:
                assert store.migrate(other, tmp) == []
    finally:
        shutil.rmtree(tmp)


# ---------------------------------------------------------------- writing


def test_first_write_rows_equal_the_state(conn: psycopg.Connection[Any]) -> None:
    state = synthetic_state("host-a", interfaces=2, peers=250)
    report = write(conn, state)
    assert report.status == "ok"
    assert report.tables["interfaces"].inserted == 2
    assert report.tables["peers"].inserted == 500
    assert report.tables["server_keys"].inserted == 2
    assert report.total_config_rows_written == 504
    assert report.round_trips < 40  # bulk, not a round trip per row

    ifaces = {i.name: i for i in store.load_interfaces(conn, "host-a")}
    assert set(ifaces) == {"wg0", "wg1"}
    for name, want in state.interfaces.items():
        row = ifaces[name]
        assert row.public_key == want.public_key
        assert row.listen_port == want.listen_port
        assert row.addresses == list(want.addresses or ())
        assert row.post_up == list(want.post_up or ())
        assert row.mtu == 1420 and row.fwmark == 0 and row.save_config is False
        assert want.conf_text is not None
        assert row.conf_sha256 == hashlib.sha256(want.conf_text.reveal().encode()).hexdigest()
        assert row.sources == ["conf", "kernel"]
        assert row.provenance == {"listen_port": "kernel", "addresses": "conf"}
        assert row.version == 1 and row.removed_at is None

    rows = {(p.interface, p.public_key): p for p in store.load_peers(conn, "host-a")}
    assert len(rows) == 500
    for ifname, iface in state.interfaces.items():
        for key, peer in iface.peers.items():
            row = rows[(ifname, key)]
            assert row.name == peer.name
            assert row.allowed_ips == list(peer.allowed_ips or ())
            assert row.endpoint == peer.endpoint
            assert row.persistent_keepalive == peer.persistent_keepalive
            assert row.comments == list(peer.comments or ())
            assert row.disabled is False
            assert peer.preshared_key is not None
            assert row.has_preshared_key is True
            assert row.preshared_key_fp == peer.preshared_key.fingerprint()
            assert row.has_private_key is (True if peer.private_key else None)  # None = unknown
            assert row.provenance == {"allowed_ips": "conf", "endpoint": "kernel"}
            assert row.version == 1
    assert len(store.load_peers(conn, "host-a", "wg1")) == 250

    keys = store.load_server_keys(conn, "host-a")
    assert [(k.interface, k.public_key, k.fingerprint, k.retired_at) for k in keys] == [
        (n, i.public_key, key_fingerprint(i.public_key or ""), None) for n, i in state.interfaces.items()
    ]
    stats = store.load_peer_stats(conn, "host-a")
    assert len(stats) == 500
    assert all(s.rx_total == s.rx_bytes and s.tx_total == s.tx_bytes for s in stats)
    [st] = store.status(conn, "host-a")
    assert (st.status, st.interfaces, st.peers, st.config_rows_written) == ("ok", 2, 500, 504)
    assert st.sync_id == report.sync_id


def peer_rows(conn: psycopg.Connection[Any], host_id: str) -> list[tuple[Any, ...]]:
    """Every peer row's stored values, without the host and the times (comparable across hosts)."""
    fields = ("interface", "public_key", "name", "allowed_ips", "endpoint", "persistent_keepalive")
    fields += ("comments", "has_preshared_key", "preshared_key_fp", "provenance", "version", "removed_at")
    return sorted(tuple(getattr(p, f) for f in fields) for p in store.load_peers(conn, host_id))


def test_config_rows_in_chunks_equal_one_statement(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """More than CHUNK_ROWS rows go in several statements: the same rows as one statement."""
    from wgsyncd.store import writer

    same = synthetic_state("host-b", interfaces=2, peers=250)
    same.host_id = "host-a"  # host-b's very peers, under another host
    whole = write(conn, same)
    monkeypatch.setattr(writer, "CHUNK_ROWS", 7)  # 500 rows: 72 statements, the last one short
    chunked = write(conn, synthetic_state("host-b", interfaces=2, peers=250))
    assert chunked.tables["peers"].inserted == whole.tables["peers"].inserted == 500
    assert chunked.round_trips == whole.round_trips + 71  # 72 statements for the peers, not 1
    assert peer_rows(conn, "host-b") == peer_rows(conn, "host-a") and len(peer_rows(conn, "host-a")) == 500
    changed = synthetic_state("host-b", interfaces=2, peers=250, counters=9999)
    del changed.interfaces["wg1"]
    assert write(conn, changed).tables["peers"].removed == 250


def test_version_built_after_the_rows_equals_the_one_built_beside_them(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's write (build_ahead=False, no worker thread) records the very version the
    one-shot sync builds on a thread while the server writes the rows."""
    from wgsyncd.store import ahead

    started: list[str] = []
    real = ahead.start
    monkeypatch.setattr(ahead, "start", lambda state, key: started.append(state.host_id) or real(state, key))
    beside = synthetic_state("host-a", interfaces=2, peers=50)
    after = synthetic_state("host-a", interfaces=2, peers=50)
    after.host_id = "host-b"
    for state, build_ahead in ((beside, True), (after, False)):
        store.write_cycle(
            conn,
            state,
            sync_id=uuid.uuid4(),
            started_at=datetime.now(UTC),
            agent_version="t",
            build_ahead=build_ahead,
        )
    assert started == ["host-a"]  # only the write that asked for it started the thread
    docs = {
        h: conn.execute("SELECT content_sha256, doc FROM config_versions WHERE host_id = %s", (h,)).fetchall()
        for h in ("host-a", "host-b")
    }
    assert len(docs["host-a"]) == 1 and docs["host-a"] == docs["host-b"]


def test_same_state_again_writes_zero_config_rows(conn: psycopg.Connection[Any]) -> None:
    write(conn, synthetic_state("host-a"))
    before = snapshot(conn, "host-a")
    ifaces_before = [(i.name, i.version, i.updated_at) for i in store.load_interfaces(conn, "host-a")]
    keys_before = store.load_server_keys(conn, "host-a")
    stats_before = store.load_peer_stats(conn, "host-a")

    report = write(conn, synthetic_state("host-a"))
    assert report.total_config_rows_written == 0
    assert report.stats_rows_written == 0 and report.traffic_rows_written == 0
    assert all(c.written == 0 for t, c in report.tables.items() if t != "hosts")
    assert report.round_trips <= 10
    assert snapshot(conn, "host-a") == before
    assert [(i.name, i.version, i.updated_at) for i in store.load_interfaces(conn, "host-a")] == ifaces_before
    assert store.load_server_keys(conn, "host-a") == keys_before
    assert store.load_peer_stats(conn, "host-a") == stats_before
    assert [s.config_rows_written for s in store.status(conn, "host-a")] == [0, 504]


def test_runtime_changes_never_bump_peer_rows(conn: psycopg.Connection[Any]) -> None:
    write(conn, synthetic_state("host-a", collected_at=T0))
    before = snapshot(conn, "host-a")
    busy = synthetic_state("host-a", collected_at=T0 + timedelta(minutes=1), counters=5000)
    for iface in busy.interfaces.values():
        for peer in iface.peers.values():
            peer.latest_handshake = T0 + timedelta(seconds=30)
    report = write(conn, busy)
    assert report.total_config_rows_written == 0
    assert report.stats_rows_written == 500 and report.traffic_rows_written == 500
    assert snapshot(conn, "host-a") == before
    hs = {s.latest_handshake for s in store.load_peer_stats(conn, "host-a")}
    assert hs == {T0 + timedelta(seconds=30)}


def test_add_change_remove_one_peer(conn: psycopg.Connection[Any]) -> None:
    original = synthetic_state("host-a")
    write(conn, original)
    before = snapshot(conn, "host-a")

    state = synthetic_state("host-a")
    wg0 = state.interfaces["wg0"]
    keys = list(wg0.peers)
    gone, changed = keys[3], keys[7]
    del wg0.peers[gone]
    wg0.peers[changed].allowed_ips = ("10.99.0.1/32", "10.99.0.2/32")
    new = fake_key("host-a", "new-peer")
    wg0.peers[new] = Peer(public_key=new, allowed_ips=("10.98.0.1/32",), seen_by=(Source.KERNEL,))
    report = write(conn, state)
    assert (report.tables["peers"].inserted, report.tables["peers"].updated) == (1, 1)
    assert report.tables["peers"].removed == 1
    assert report.total_config_rows_written == 3

    after = snapshot(conn, "host-a")
    differ = {k for k in after if after[k] != before.get(k)}
    assert differ == {("wg0", gone), ("wg0", changed), ("wg0", new)}
    assert after[("wg0", gone)][0] == 2 and after[("wg0", gone)][2] is not None
    assert after[("wg0", changed)][0] == 2 and after[("wg0", changed)][2] is None
    assert after[("wg0", changed)][1] > before[("wg0", changed)][1]
    assert after[("wg0", new)][0] == 1
    [row] = [p for p in store.load_peers(conn, "host-a", "wg0") if p.public_key == changed]
    assert row.allowed_ips == ["10.99.0.1/32", "10.99.0.2/32"]
    assert {p.public_key for p in store.load_peers(conn, "host-a", include_removed=False)} == (
        {k for i in state.interfaces.values() for k in i.peers}
    )

    # the original again: the removed peer comes back, the new one goes, the changed one reverts
    report = write(conn, original)
    assert (report.tables["peers"].inserted, report.tables["peers"].updated) == (0, 2)
    assert report.tables["peers"].removed == 1
    back = snapshot(conn, "host-a")
    assert back[("wg0", gone)][0] == 3 and back[("wg0", gone)][2] is None
    assert back[("wg0", new)][2] is not None
    assert back[("wg0", changed)][3] == before[("wg0", changed)][3]  # same config, same hash


def test_incomplete_interface_removes_nothing_and_keeps_known_values(conn: psycopg.Connection[Any]) -> None:
    write(conn, synthetic_state("host-a"))
    before = snapshot(conn, "host-a")
    state = synthetic_state("host-a")
    state.errors = [
        SourceError(Source.WGREST, "http://127.0.0.1:51822/v1/devices/wg0/peers", "timeout", "wg0")
    ]
    wg0, wg1 = state.interfaces["wg0"], state.interfaces["wg1"]
    keys0, keys1 = list(wg0.peers), list(wg1.peers)
    for k in keys0[:10]:
        del wg0.peers[k]  # not seen this cycle: must not be removed
    wg0.listen_port = None
    wg0.addresses = None
    wg0.public_key = None
    wg0.private_key = None
    wg0.seen_by = (Source.KERNEL,)
    p = wg0.peers[keys0[20]]
    p.endpoint = None
    p.preshared_key = None
    p.name = None
    p.allowed_ips = ("10.77.0.1/32",)  # known and changed: updated
    p.seen_by = (Source.KERNEL,)
    p.provenance = {"allowed_ips": Source.KERNEL}
    del wg1.peers[keys1[0]]  # wg1 was read completely: this one is removed

    report = write(conn, state)
    assert report.status == "partial"
    assert report.tables["peers"].removed == 1
    assert report.tables["peers"].updated == 1
    assert report.tables["interfaces"].written == 0  # only unknowns and a subset of sources: no change
    after = snapshot(conn, "host-a")
    assert all(after[("wg0", k)] == before[("wg0", k)] for k in keys0[:10])
    assert after[("wg1", keys1[0])][2] is not None
    [iface] = [i for i in store.load_interfaces(conn, "host-a") if i.name == "wg0"]
    assert iface.listen_port == 51820 and iface.addresses == ["198.51.100.1/24"]
    assert iface.public_key == fake_key("host-a", "wg0", "public")
    assert iface.sources == ["conf", "kernel"] and iface.removed_at is None
    [row] = [r for r in store.load_peers(conn, "host-a", "wg0") if r.public_key == keys0[20]]
    original = synthetic_state("host-a").interfaces["wg0"].peers[keys0[20]]
    assert row.allowed_ips == ["10.77.0.1/32"]
    assert row.endpoint == original.endpoint and row.name == original.name
    assert row.has_preshared_key is True and row.preshared_key_fp is not None
    assert row.sources == ["conf", "kernel"]
    assert row.provenance == {"allowed_ips": "kernel", "endpoint": "kernel"}
    assert [k.retired_at for k in store.load_server_keys(conn, "host-a")] == [None, None]
    [st] = store.status(conn, "host-a", limit=1)
    assert st.status == "partial"
    assert st.errors == ["wgrest: http://127.0.0.1:51822/v1/devices/wg0/peers: timeout"]


def test_interface_missing_during_whole_source_error_is_kept(conn: psycopg.Connection[Any]) -> None:
    write(conn, synthetic_state("host-a"))
    before = snapshot(conn, "host-a")
    state = synthetic_state("host-a")
    del state.interfaces["wg1"]
    state.errors = [SourceError(Source.CONF, "/etc/wireguard", "permission denied")]
    report = write(conn, state)
    assert report.total_config_rows_written == 0
    assert snapshot(conn, "host-a") == before

    # no source available at all: an empty state means "unknown", not "no interfaces"
    nothing = HostState(host_id="host-a", hostname="a", collected_at=datetime.now(UTC))
    assert write(conn, nothing).total_config_rows_written == 0
    assert snapshot(conn, "host-a") == before

    # a complete read without wg1: the interface, its peers and its key go
    state.errors = []
    report = write(conn, state)
    assert report.tables["interfaces"].removed == 1
    assert report.tables["peers"].removed == 250
    assert report.tables["server_keys"].removed == 1
    wg1 = next(i for i in store.load_interfaces(conn, "host-a") if i.name == "wg1")
    assert wg1.removed_at is not None and wg1.version == 2
    assert all(p.removed_at is not None for p in store.load_peers(conn, "host-a", "wg1"))
    retired = {k.interface: k.retired_at for k in store.load_server_keys(conn, "host-a")}
    assert retired["wg1"] is not None and retired["wg0"] is None

    # and it comes back
    report = write(conn, synthetic_state("host-a"))
    assert report.tables["interfaces"].updated == 1 and report.tables["peers"].updated == 250
    assert report.tables["server_keys"].updated == 1
    assert all(p.removed_at is None and p.version == 3 for p in store.load_peers(conn, "host-a", "wg1"))


def test_server_key_rotation_retires_the_old_key(conn: psycopg.Connection[Any]) -> None:
    write(conn, synthetic_state("host-a", peers=3))
    state = synthetic_state("host-a", peers=3)
    old_key = state.interfaces["wg0"].public_key
    state.interfaces["wg0"].private_key = Secret(fake_key("rotated"))
    state.interfaces["wg0"].public_key = None  # derived from the private key by the store
    report = write(conn, state)
    assert report.tables["server_keys"].inserted == 1 and report.tables["server_keys"].removed == 1
    keys = [k for k in store.load_server_keys(conn, "host-a") if k.interface == "wg0"]
    assert [(k.public_key == old_key, k.retired_at is not None) for k in keys] == [
        (True, True),
        (False, False),
    ]
    [iface] = [i for i in store.load_interfaces(conn, "host-a") if i.name == "wg0"]
    assert iface.public_key == keys[1].public_key and iface.version == 2
    assert len(base64.b64decode(keys[1].public_key)) == 32


def _one_peer_state(at: datetime, rx: int, tx: int) -> HostState:
    """One interface, one peer with the given counters."""
    key = fake_key("counter-peer")
    iface = Interface(name="wg0", public_key=fake_key("counter-if"), seen_by=(Source.KERNEL,))
    iface.peers[key] = Peer(public_key=key, allowed_ips=("10.0.0.2/32",), rx_bytes=rx, tx_bytes=tx)
    return HostState(host_id="host-c", hostname="c", collected_at=at, interfaces={"wg0": iface})


def test_counter_reset_keeps_totals_monotonic(conn: psycopg.Connection[Any]) -> None:
    readings = [(100, 1000), (300, 1000), (300, 1000), (50, 10), (80, 20), (80, 2000)]
    want_rx = [100, 200, 0, 50, 30, 0]  # a reset: the delta is the new value
    want_tx = [1000, 0, 0, 10, 10, 1980]
    totals: list[tuple[int, int]] = []
    for n, (rx, tx) in enumerate(readings):
        write(conn, _one_peer_state(T0 + timedelta(minutes=n), rx, tx))
        [s] = store.load_peer_stats(conn, "host-c")
        assert (s.rx_bytes, s.tx_bytes) == (rx, tx)
        totals.append((s.rx_total, s.tx_total))
    assert totals == sorted(totals)  # never down
    assert totals[-1] == (sum(want_rx), sum(want_tx))
    history = conn.execute(
        "SELECT observed_at, rx_delta, tx_delta FROM peer_traffic WHERE host_id = 'host-c' ORDER BY 1"
    ).fetchall()
    conn.rollback()
    expect = [
        (T0 + timedelta(minutes=n), r, t)
        for n, (r, t) in enumerate(zip(want_rx, want_tx, strict=True))
        if r or t
    ]
    assert history == expect
    assert sum(h[1] for h in history) == totals[-1][0] and sum(h[2] for h in history) == totals[-1][1]
    # the unchanged reading (n=2) wrote no stats row: observed_at stayed at minute 1 until minute 3
    [s] = store.load_peer_stats(conn, "host-c")
    assert s.observed_at == T0 + timedelta(minutes=5)


def test_drift_and_status_rows(conn: psycopg.Connection[Any]) -> None:
    state = synthetic_state("host-a", peers=2)
    state.drift = [
        Drift("wg0", None, "listen_port", DriftKind.DIFFERS, (("kernel", "51820"), ("conf", "51821"))),
        Drift("wg0", "abc", "peer", DriftKind.ONLY_IN, (("kernel", "present"),)),
    ]
    first = write(conn, state)
    sid = uuid.uuid4()
    store.record_failure(conn, "host-a", sid, datetime.now(UTC), "database x: boom", "test")
    store.record_failure(conn, "host-b", uuid.uuid4(), datetime.now(UTC), "other host", "test")
    rows = store.status(conn, "host-a")
    assert [r.status for r in rows] == ["failed", "ok"]
    assert rows[0].sync_id == sid and rows[0].message == "database x: boom"
    assert rows[1].sync_id == first.sync_id and rows[1].drift_count == 2
    assert rows[1].drift[0] == {
        "interface": "wg0",
        "peer": None,
        "field": "listen_port",
        "kind": "differs",
        "values": [["kernel", "51820"], ["conf", "51821"]],
    }
    assert rows[1].duration_ms >= 0
    assert [r.host_id for r in store.status(conn)] == ["host-b", "host-a", "host-a"]
    assert len(store.status(conn, limit=1)) == 1
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


# ---------------------------------------------------------------- failures


def test_unreachable_socket_dir_names_target_not_password() -> None:
    empty = tempfile.mkdtemp(prefix="wgs-nopg-")
    try:
        cfg = DatabaseConfig(
            dsn=f"host={empty} port=5999 dbname=wgsyncd_db user=wgs password=InlinePw99",
            password=Secret("S3cretPassw0rd"),
            connect_timeout=2,
        )
        with pytest.raises(store.StoreError) as info:
            store.connect(cfg)
        msg = str(info.value)
        assert empty in msg and "wgsyncd_db" in msg and "connect failed" in msg
        assert "S3cretPassw0rd" not in msg and "InlinePw99" not in msg
        assert "\n" not in msg
    finally:
        shutil.rmtree(empty)


def test_tcp_port_that_never_answers_times_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(8)  # the kernel completes the handshake; nobody ever answers
        port = black_hole.getsockname()[1]
        cfg = DatabaseConfig(
            dsn=f"postgresql://wgs@127.0.0.1:{port}/wgsyncd_db",
            password=Secret("S3cretPassw0rd"),
            connect_timeout=2,
        )
        t = time.monotonic()
        with pytest.raises(store.StoreError) as info:
            store.connect(cfg)
        elapsed = time.monotonic() - t
    assert 1.5 <= elapsed < 10, elapsed
    msg = str(info.value)
    assert f"127.0.0.1:{port}/wgsyncd_db" in msg and "S3cretPassw0rd" not in msg


def test_role_without_insert_rights_writes_nothing(
    pg_cluster: PgCluster, conn: psycopg.Connection[Any]
) -> None:
    role = "ro_" + uuid.uuid4().hex[:8]
    dbname = conn.info.dbname
    with superuser(pg_cluster, conn) as su:
        su.execute(f"CREATE ROLE {role} LOGIN")
        su.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    cfg = DatabaseConfig(dsn=pg_cluster.dsn(dbname, user=role), password=Secret("RoPassw0rd!"))
    ro = store.connect(cfg)
    try:
        with pytest.raises(store.StoreError) as info:
            write(ro, synthetic_state("host-r", peers=100))
        msg = str(info.value)
        assert "InsufficientPrivilege" in msg and dbname in msg and "write_cycle for host host-r" in msg
        assert "RoPassw0rd!" not in msg
        with pytest.raises(store.StoreError, match="record_failure"):
            store.record_failure(ro, "host-r", uuid.uuid4(), datetime.now(UTC), "x", "test")
        assert store.status(ro) == []  # the connection is usable again
    finally:
        ro.close()
    with superuser(pg_cluster, conn) as su:
        for table in (
            "hosts",
            "interfaces",
            "peers",
            "server_keys",
            "peer_stats",
            "peer_traffic",
            "sync_status",
        ):
            assert count(su, table) == 0, table


def test_lock_timeout_rolls_back_everything(pg_cluster: PgCluster, db_config: DatabaseConfig) -> None:
    db_config.statement_timeout = 2.0  # lock_timeout is half: 1 s
    c = store.connect(db_config)
    store.migrate(c)
    write(c, synthetic_state("host-a", peers=100))
    with superuser(pg_cluster, c) as su:
        before = su.execute("SELECT last_seen, last_sync_id FROM hosts").fetchall()
        blocker = psycopg.connect(pg_cluster.dsn(c.info.dbname))
        blocker.execute("LOCK TABLE peers IN ACCESS EXCLUSIVE MODE")
        changed = synthetic_state("host-a", peers=100, counters=9999)
        del changed.interfaces["wg1"]
        t = time.monotonic()
        with pytest.raises(store.StoreError, match="LockNotAvailable"):
            write(c, changed)
        assert time.monotonic() - t < 5
        blocker.rollback()
        blocker.close()
        assert su.execute("SELECT last_seen, last_sync_id FROM hosts").fetchall() == before
        assert count(su, "sync_status") == 1
        assert su.execute("SELECT count(*) FROM peers WHERE removed_at IS NOT NULL").fetchone() == (0,)
        assert su.execute("SELECT max(rx_bytes) FROM peer_stats").fetchone() == (1099,)
    report = write(c, changed)  # and the same connection works afterwards
    assert report.tables["peers"].removed == 100
    c.close()


def renamed(state: HostState, tag: str) -> HostState:
    """Every peer of ``state`` with a new name: a config change of every row."""
    for iface in state.interfaces.values():
        for key, peer in list(iface.peers.items()):
            iface.peers[key] = dataclasses.replace(peer, name=f"{tag}-{key[:6]}")
    return state


def names(dsn: str) -> set[str]:
    """Every peer name stored (committed), seen from a session of its own."""
    with psycopg.connect(dsn, autocommit=True) as su:
        return {r[0] for r in su.execute("SELECT name FROM peers").fetchall()}


@pytest.fixture
def chunked(monkeypatch: pytest.MonkeyPatch) -> int:
    """Config rows in statements of 7 (store/writer.py), so 100 peers make 15."""
    from wgsyncd.store import writer

    monkeypatch.setattr(writer, "CHUNK_ROWS", 7)
    return 7


def locked_mid_write(cluster: PgCluster, conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """Another session holding the 61st peer row (key order): the 9th of 15 chunks waits on it."""
    locker = psycopg.connect(cluster.dsn(conn.info.dbname))
    keys = locker.execute(
        'SELECT public_key FROM peers ORDER BY interface, public_key COLLATE "C"'
    ).fetchall()
    locker.execute("SELECT 1 FROM peers WHERE public_key = %s FOR UPDATE", keys[60])
    return locker


def synced_then_locked(
    cluster: PgCluster, db_config: DatabaseConfig, statement_timeout: float
) -> tuple[psycopg.Connection[Any], str, set[str], psycopg.Connection[Any]]:
    """A host with 100 peers written, then a peer row in the 9th chunk locked by another session:
    (the host's connection, the database's DSN, the names stored, the locking session)."""
    db_config.statement_timeout = statement_timeout  # lock_timeout is half
    c = store.connect(db_config)
    store.migrate(c)
    write(c, synthetic_state("host-a", peers=50))
    dsn = cluster.dsn(c.info.dbname)
    return c, dsn, names(dsn), locked_mid_write(cluster, c)


def test_a_lock_in_a_middle_chunk_rolls_back_every_chunk(
    pg_cluster: PgCluster, db_config: DatabaseConfig, chunked: int
) -> None:
    c, dsn, before, locker = synced_then_locked(pg_cluster, db_config, 2.0)
    with pytest.raises(store.StoreError, match="LockNotAvailable") as info:
        write(c, renamed(synthetic_state("host-a", peers=50), "x"))
    assert "peers" in str(info.value)  # the row lock's relation, from the server's error context
    locker.rollback()
    locker.close()
    assert names(dsn) == before  # the chunks before the locked one were rolled back with it
    report = write(c, renamed(synthetic_state("host-a", peers=50), "y"))  # the connection still works
    assert report.tables["peers"].updated == 100
    assert all(n.startswith("y-") for n in names(dsn))
    c.close()


def test_a_stop_signal_mid_write_unwinds_at_once_and_commits_nothing(
    pg_cluster: PgCluster, db_config: DatabaseConfig, chunked: int
) -> None:
    """SIGTERM's CycleAbandoned while the 9th chunk waits on a lock: it reaches the daemon as
    itself (not as a DB failure), and nothing the chunks before it wrote is committed."""
    import signal

    from wgsyncd.daemonkit import CycleAbandoned

    # the lock wait would last 30 s: only the signal ends it
    c, dsn, before, locker = synced_then_locked(pg_cluster, db_config, 60.0)
    pid = c.info.backend_pid
    main = threading.get_ident()

    def on_alarm(_sig: int, _frame: Any) -> None:
        raise CycleAbandoned("SIGTERM")

    def signal_once_waiting() -> None:
        with superuser(pg_cluster, c) as su:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                row = su.execute(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchone()
                if row and row[0] == "Lock":
                    break
                time.sleep(0.02)
        signal.pthread_kill(main, signal.SIGALRM)

    old = signal.signal(signal.SIGALRM, on_alarm)
    waiter = threading.Thread(target=signal_once_waiting)
    waiter.start()
    try:
        with pytest.raises(CycleAbandoned):
            write(c, renamed(synthetic_state("host-a", peers=50), "x"))
    finally:
        waiter.join()
        signal.signal(signal.SIGALRM, old)
    c.close()  # what the daemon does on its way out (daemon.loop: _close_quietly)
    locker.rollback()
    locker.close()
    with psycopg.connect(dsn, autocommit=True) as su:
        poll_gone = time.monotonic() + 30  # the abandoned backend ends once it finds its client gone
        while su.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < poll_gone, "the abandoned backend stayed"
            time.sleep(0.05)
    assert names(dsn) == before


def test_killed_connection_is_a_store_error(pg_cluster: PgCluster, conn: psycopg.Connection[Any]) -> None:
    pid = conn.info.backend_pid
    with superuser(pg_cluster, conn) as su:
        su.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(store.StoreError) as info:
        write(conn, synthetic_state("host-a", peers=5))
    assert "write_cycle for host host-a" in str(info.value)


def test_no_key_material_in_any_column(pg_cluster: PgCluster, conn: psycopg.Connection[Any]) -> None:
    state = synthetic_state("host-a", interfaces=2, peers=50)
    state.drift = [Drift("wg0", None, "listen_port", DriftKind.DIFFERS, (("kernel", "1"), ("conf", "2")))]
    write(conn, state)
    changed = copy.deepcopy(state)
    changed.interfaces["wg0"].peers.popitem()
    write(conn, changed)
    secrets: list[str] = []
    for iface in state.interfaces.values():
        for s in (iface.private_key, iface.conf_text):
            if s is not None:
                secrets.append(s.reveal())
        for p in iface.peers.values():
            secrets += [s.reveal() for s in (p.preshared_key, p.private_key) if s is not None]
    assert len(secrets) > 100
    needles = set(secrets)
    for s in secrets:
        try:
            raw = base64.b64decode(s, validate=True)
        except ValueError:
            continue  # conf text
        needles |= {raw.hex(), s.rstrip("=")}
    with superuser(pg_cluster, conn) as su:
        tables = [
            r[0]
            for r in su.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchall()
        ]
        assert {"hosts", "peers", "interfaces", "server_keys", "sync_status"} <= set(tables)
        dump = "\n".join(
            str(r[0]) for t in tables for r in su.execute(f"SELECT t::text FROM {t} t").fetchall()
        )
    assert len(dump) > 10_000
    leaked = [n for n in needles if n in dump]
    assert leaked == []


def test_open_transaction_is_refused(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT 1")  # leaves a transaction open (autocommit off)
    with pytest.raises(store.StoreError, match="open transaction"):
        write(conn, synthetic_state("host-a", peers=1))
    conn.rollback()
    assert write(conn, synthetic_state("host-a", peers=1)).status == "ok"


def test_connect_sets_session_limits(db_config: DatabaseConfig) -> None:
    db_config.statement_timeout = 7.5
    c = store.connect(db_config, application_name="wgsyncd-test")
    try:
        got = {
            name: c.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("statement_timeout", "lock_timeout", "TimeZone", "application_name")
        }
        assert got == {
            "statement_timeout": "7500ms",
            "lock_timeout": "3750ms",
            "TimeZone": "UTC",
            "application_name": "wgsyncd-test",
        }
        assert c.autocommit is False
    finally:
        c.close()


def test_timings_10k_peers(conn: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]) -> None:
    state = synthetic_state("host-big", interfaces=1, peers=10_000, collected_at=T0)
    t = time.monotonic()
    first = write(conn, state)
    t_first = time.monotonic() - t
    state.collected_at = T0 + timedelta(minutes=1)
    t = time.monotonic()
    idle = write(conn, state)
    t_idle = time.monotonic() - t
    peers = state.interfaces["wg0"].peers
    for n, (key, peer) in enumerate(list(peers.items())):
        if n % 10 == 0:  # new objects for what changed, as sources hand them (write_cycle's contract)
            peers[key] = dataclasses.replace(peer, rx_bytes=(peer.rx_bytes or 0) + 4096)
    state.collected_at = T0 + timedelta(minutes=2)
    t = time.monotonic()
    busy = write(conn, state)
    t_busy = time.monotonic() - t
    assert first.total_config_rows_written == 10_002 and idle.total_config_rows_written == 0
    assert busy.total_config_rows_written == 0 and busy.stats_rows_written == 1000
    with capsys.disabled():
        print(
            f"\n10,000 peers: first write {t_first:.3f}s ({first.round_trips} round trips), "
            f"idle {t_idle:.3f}s ({idle.round_trips}), 10% counters {t_busy:.3f}s ({busy.round_trips})"
        )


# ---------------------------------------------------------------- pure helpers (no database)


def test_describe_conninfo_never_shows_the_password() -> None:
    assert store.describe_conninfo("postgresql://u:TopS3cret@db.example:6432/wg?sslmode=require") == (
        "database db.example:6432/wg"
    )
    assert store.describe_conninfo("host=/run/postgresql dbname=wg password=TopS3cret") == (
        "database /run/postgresql/wg"
    )
    assert "TopS3cret" not in store.describe_conninfo("password=TopS3cret host=x dbname=")
    assert store.describe_conninfo(None) == "database (no dsn)"


def test_bad_dsn_is_a_clear_error_without_the_dsn() -> None:
    cfg = DatabaseConfig(dsn="host=x password='TopS3cret", password=Secret("pw"))
    with pytest.raises(store.StoreError) as info:
        store.connect(cfg)
    assert str(info.value).startswith("database.dsn: ") and "TopS3cret" not in str(info.value)
    with pytest.raises(store.StoreError, match=r"database\.dsn: not set"):
        store.connect(DatabaseConfig(dsn=None))


def test_limits_are_per_transaction_and_user_options_pass_through(db_config: DatabaseConfig) -> None:
    """No startup ``options`` of ours (pgbouncer refuses or drops them); the DSN's own stay."""
    from wgsyncd.store.pooled import Limits

    assert Limits.for_statement_timeout(4) == Limits(4000, 2000, 60_000)
    db_config.dsn = f"{db_config.dsn} options='-c search_path=public,pg_catalog'"
    c = store.connect(db_config)
    try:
        assert "statement_timeout" not in (c.info.get_parameters().get("options") or "")
        with c.transaction():
            assert c.execute("SHOW search_path").fetchone() == ("public,pg_catalog",)
            assert c.execute("SHOW statement_timeout").fetchone() == ("20s",)
        c.execute("SET statement_timeout = 0")  # session level, as a careless caller might
        c.commit()
        with c.transaction():  # the next transaction has its limit again
            assert c.execute("SHOW statement_timeout").fetchone() == ("20s",)
    finally:
        c.close()


def test_counter_delta_and_keep_known() -> None:
    from wgsyncd.store.writer import counter_delta, keep_known

    assert counter_delta(150, 100, False) == 50
    assert counter_delta(40, 100, False) == 40  # went down: restarted
    assert counter_delta(400, 100, True) == 400  # the other counter went down: both restarted
    fields = ("endpoint", "has_preshared_key", "preshared_key_fp", "sources", "provenance")
    old = ("203.0.113.1:1", True, "fp-old", ["conf", "kernel"], {"endpoint": "conf"})
    new = (None, False, None, ["kernel"], {"allowed_ips": "kernel"})
    assert keep_known(fields, old, new) == (
        "203.0.113.1:1",
        False,
        None,  # the pair is taken together: "no preshared key now" is known
        ["conf", "kernel"],
        {"endpoint": "conf", "allowed_ips": "kernel"},
    )


def test_server_crash_mid_life_then_recovery() -> None:
    """A crashed server: the next write is a StoreError; after restart every commit is there."""
    base = tempfile.mkdtemp(prefix="wgs-crash-", dir="/tmp")
    cluster = PgCluster.start(base)
    try:
        cfg = DatabaseConfig(dsn=cluster.create_database("crashdb"), connect_timeout=2)
        conn = store.connect(cfg)
        store.migrate(conn)
        state = synthetic_state("host-k", peers=100)
        write(conn, state)
        cluster.crash()
        with pytest.raises(store.StoreError) as info:
            write(conn, state)
        assert "crashdb" in str(info.value) or "connection lost" in str(info.value)
        with pytest.raises(store.StoreError, match="connect failed"):
            store.connect(cfg)
        cluster.restart()
        conn = store.connect(cfg)
        assert len(store.load_peers(conn, "host-k")) == 200
        assert write(conn, state).total_config_rows_written == 0
        assert [r.status for r in store.status(conn, "host-k")] == ["ok", "ok"]
        conn.close()
    finally:
        cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


def test_pg_conn_fixture_is_migrated(pg_conn: psycopg.Connection[Any]) -> None:
    assert store.migrate(pg_conn) == []
    assert store.status(pg_conn) == []


def test_versions_skip_idle_cycles_but_follow_a_recovery_key_change(conn: psycopg.Connection[Any]) -> None:
    """No config row written -> no version (the fast path); a new recovery key -> a new version."""
    from wgsyncd import secrets

    keys = [secrets.init_recovery(str(Path(tempfile.mkdtemp()) / "k")) for _ in range(2)]

    def cycle(key: str) -> store.WriteReport:
        return store.write_cycle(
            conn,
            synthetic_state("host-v"),
            sync_id=uuid.uuid4(),
            started_at=datetime.now(UTC),
            agent_version="test",
            recovery_public_key=key,
        )

    assert cycle(keys[0].public).config_version == 1
    idle = cycle(keys[0].public)
    assert idle.config_version is None and idle.total_config_rows_written == 0
    rotated = cycle(keys[1].public)  # same config, sealed to the new key: must be a version
    assert rotated.config_version == 2 and rotated.total_config_rows_written == 0
    assert cycle(keys[1].public).config_version is None
    fps = [r[0] for r in conn.execute("SELECT recovery_key_fp FROM config_versions ORDER BY version")]
    assert fps == [key_fingerprint(keys[0].public), key_fingerprint(keys[1].public)]


def test_prune_removes_only_old_rows_of_this_host_in_batches(conn: psycopg.Connection[Any]) -> None:
    from wgsyncd.store import retention

    now = datetime.now(UTC)
    with conn.transaction():
        for host in ("host-p", "host-q"):
            conn.execute(
                "INSERT INTO peer_traffic SELECT %s, 'wg0', 'k' || g, %s - make_interval(days => g %% 200),"
                " 1, 1 FROM generate_series(1, 1000) g",
                (host, now),
            )
    old = "SELECT count(*) FROM peer_traffic WHERE host_id = %s AND observed_at < %s"
    cutoff = now - timedelta(days=90)
    expected_old = conn.execute(old, ("host-p", cutoff)).fetchone()[0]
    assert expected_old > 400
    conn.commit()
    retention.BATCH, saved = 300, retention.BATCH
    try:
        first = store.prune(conn, "host-p", now, 90)
        assert first.traffic == 300  # bounded: the backlog goes over several cycles
        while store.prune(conn, "host-p", now, 90).traffic:
            pass
    finally:
        retention.BATCH = saved
    assert conn.execute(old, ("host-p", cutoff)).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM peer_traffic WHERE host_id = 'host-p'").fetchone()[0] == (
        1000 - expected_old
    )
    assert conn.execute(old, ("host-q", cutoff)).fetchone()[0] == expected_old  # other host untouched
    assert store.prune(conn, "host-q", now, 0).traffic == 0  # 0 = keep forever
    conn.commit()


def test_version_catches_up_after_a_partial_cycle_wrote_the_rows(conn: psycopg.Connection[Any]) -> None:
    """A change first seen in a partial cycle must reach the next complete cycle's version.

    The partial cycle writes the known value to the config row but carries the
    interface's previous version document forward; the next complete cycle then
    writes no config row, and the fast path must not take that as "nothing changed".
    """
    assert write(conn, synthetic_state("host-r")).config_version == 1
    changed = synthetic_state("host-r")
    changed.interfaces["wg0"].listen_port = 51999  # `wg set wg0 listen-port` while wgrest timed out
    changed.errors = [SourceError(Source.WGREST, "http://127.0.0.1:51822/v1/devices/wg0", "timeout", "wg0")]
    partial = write(conn, changed)
    assert partial.status == "partial" and partial.tables["interfaces"].updated == 1
    assert partial.config_version is None  # wg0 was read incompletely: its document is carried forward

    complete = synthetic_state("host-r")
    complete.interfaces["wg0"].listen_port = 51999
    report = write(conn, complete)
    latest = versions.load_version(conn, "host-r")
    assert latest is not None
    assert latest.doc["interfaces"]["wg0"]["listen_port"] == 51999, report
    assert report.config_version == 2
    assert write(conn, complete).config_version is None  # and idle again afterwards


def test_cycle_prunes_at_most_hourly_unless_a_backlog_is_left(conn: psycopg.Connection[Any]) -> None:
    """The loop keeps pruning off the hot path: once an hour, or every cycle while a batch comes back full."""
    from wgsyncd import cycle
    from wgsyncd.config import Config
    from wgsyncd.store import retention

    cfg = Config(host_id="host-h")
    now = datetime.now(UTC)

    def add_old_rows(n: int) -> None:
        with conn.transaction():
            conn.execute(
                "INSERT INTO peer_traffic SELECT 'host-h', 'wg0', 'k' || g || %s, %s, 1, 1"
                " FROM generate_series(1, %s) g",
                (uuid.uuid4().hex, now - timedelta(days=400), n),
            )

    def old_rows() -> int:
        with conn.transaction():
            return conn.execute("SELECT count(*) FROM peer_traffic WHERE host_id = 'host-h'").fetchone()[0]

    memo = Memo()  # the daemon's between-cycle memory
    retention.BATCH, saved = 5, retention.BATCH
    try:
        add_old_rows(7)
        cycle._prune(conn, cfg, now, memo)  # full batch of 5: a backlog, so the next cycle prunes again
        assert old_rows() == 2
        cycle._prune(conn, cfg, now, memo)
        assert old_rows() == 0
        add_old_rows(3)
        cycle._prune(conn, cfg, now, memo)  # the last prune was not full: wait an hour
        assert old_rows() == 3
        cycle._prune(conn, cfg, now + timedelta(minutes=59), memo)  # within the hour: not yet
        assert old_rows() == 3
        cycle._prune(conn, cfg, now + timedelta(hours=1), memo)
        assert old_rows() == 0
        add_old_rows(3)
        cycle._prune(conn, cfg, now - timedelta(days=1), memo)  # the clock went back: prune
        assert old_rows() == 0
    finally:
        retention.BATCH = saved


# ---------------------------------------------------------------- the writer's kept view (store/known.py)


def _drop_one_peer(state: HostState) -> tuple[str, str]:
    """Remove one peer from ``state``; its (interface, public key)."""
    iface = next(iter(state.interfaces.values()))
    pub = next(iter(iface.peers))
    del iface.peers[pub]
    return iface.name, pub


def test_kept_view_makes_an_idle_cycle_cheaper_and_still_exact(conn: psycopg.Connection[Any]) -> None:
    from wgsyncd.store import known

    write(conn, synthetic_state("host-a"))
    known.forget(conn)
    cold = write(conn, synthetic_state("host-a"))  # loads from the database (a new connection does)
    warm = write(conn, synthetic_state("host-a"))  # on the view the previous commit left
    assert warm.total_config_rows_written == 0 and warm.stats_rows_written == 0
    assert warm.round_trips < cold.round_trips <= 10
    # the kept view still sees a change, a removal and a counter reset
    changed = synthetic_state("host-a", counters=10)
    ifname, pub = _drop_one_peer(changed)
    report = write(conn, changed)
    assert report.tables["peers"].removed == 1
    assert report.stats_rows_written == 499  # every remaining peer's counters went down
    assert {(p.interface, p.public_key) for p in store.load_peers(conn, "host-a") if p.removed_at} == {
        (ifname, pub)
    }


def test_another_writer_for_the_same_host_invalidates_the_view(
    db_config: DatabaseConfig, conn: psycopg.Connection[Any]
) -> None:
    write(conn, synthetic_state("host-a"))
    other = store.connect(db_config)
    try:
        ifname, pub = _drop_one_peer(shrunk := synthetic_state("host-a"))
        assert write(other, shrunk).tables["peers"].removed == 1
    finally:
        other.close()
    # conn's view says the peer is live; the host row says someone else wrote since
    report = write(conn, synthetic_state("host-a"))
    assert report.tables["peers"].updated == 1  # brought back, not skipped
    [peer] = [p for p in store.load_peers(conn, "host-a") if (p.interface, p.public_key) == (ifname, pub)]
    assert peer.removed_at is None


def test_a_hand_edit_is_repaired_once_the_view_is_old(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from wgsyncd.store import known

    write(conn, synthetic_state("host-a"))
    write(conn, synthetic_state("host-a"))
    conn.execute("UPDATE peers SET endpoint = 'edited:1', row_hash = 'edited' WHERE host_id = 'host-a' "
                 "AND public_key = (SELECT min(public_key) FROM peers WHERE host_id = 'host-a')")  # fmt: skip
    conn.commit()
    # within RELOAD_EVERY the edit is not seen (the documented bound) ...
    assert write(conn, synthetic_state("host-a")).total_config_rows_written == 0
    # ... and once the view is older than that, the next cycle reloads and repairs it
    monkeypatch.setattr(known, "RELOAD_EVERY", 0.0)
    assert write(conn, synthetic_state("host-a")).tables["peers"].updated == 1
    assert conn.execute("SELECT count(*) FROM peers WHERE row_hash = 'edited'").fetchone() == (0,)


def test_a_failed_cycle_drops_the_view(pg_cluster: PgCluster, db_config: DatabaseConfig) -> None:
    from wgsyncd.store import known
    from wgsyncd.store.pooled import Limits

    conn = store.connect(db_config)
    store.migrate(conn)
    try:
        write(conn, synthetic_state("host-a"))
        assert known.memo_for(conn, "host-a").view is not None
        blocker = store.connect(db_config)
        blocker.execute("LOCK TABLE peers IN ACCESS EXCLUSIVE MODE")
        conn.limits = Limits.for_statement_timeout(0.4)  # lock_timeout 200 ms from the next transaction
        changed = synthetic_state("host-a")
        _drop_one_peer(changed)
        with pytest.raises(store.StoreError):
            write(conn, changed)
        blocker.rollback()
        blocker.close()
        assert known.memo_for(conn, "host-a").view is None
        report = write(conn, changed)  # reloads, and the removal lands exactly once
        assert report.tables["peers"].removed == 1
        assert write(conn, changed).total_config_rows_written == 0
    finally:
        conn.close()


def test_same_objects_skip_counters_only_while_the_view_is_current(
    db_config: DatabaseConfig, conn: psycopg.Connection[Any]
) -> None:
    """The very same Peer objects carry the same counters, but only our own commit proves
    the database holds them: after another writer, their counters are compared again."""
    state = synthetic_state("host-a", counters=1000)
    write(conn, state)
    assert write(conn, state).stats_rows_written == 0  # same objects, view current: skipped
    other = store.connect(db_config)
    try:
        assert write(other, synthetic_state("host-a", counters=5000)).stats_rows_written == 500
    finally:
        other.close()
    again = write(conn, state)  # same objects again, but the database moved on
    assert again.stats_rows_written == 500
    assert {(s.rx_bytes, s.tx_bytes) for s in store.load_peer_stats(conn, "host-a")} == {
        (p.rx_bytes, p.tx_bytes) for i in state.interfaces.values() for p in i.peers.values()
    }


def test_naive_collection_time_is_utc(conn: psycopg.Connection[Any]) -> None:
    """A state stamped with a naive time (UTC by the writer's convention) still writes."""
    report = write(conn, synthetic_state("host-a", collected_at=datetime(2030, 1, 1, 12, 0)))
    assert report.stats_rows_written == 500
    assert {s.observed_at for s in store.load_peer_stats(conn, "host-a")} == {
        datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    }
