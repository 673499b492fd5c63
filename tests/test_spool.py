"""Issue 16 item 1: the local spool -- no clear secret in it, exact rows after replay,
idempotent when a replay is cut, bounded with a warning. Real SQLite file, real writer,
real PostgreSQL; the daemon-level outage scenarios are in tests/faults/."""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import stat
import tempfile
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.beds.postgres import fake_key, synthetic_state
from wgsyncd import secrets, spool, spooled, store
from wgsyncd.config import DatabaseConfig
from wgsyncd.state import Peer, Secret, Source
from wgsyncd.store import versions, writer

T0 = datetime(2032, 3, 1, tzinfo=UTC)


def clear_secrets(state: Any) -> list[str]:
    """Every clear secret value in a state."""
    out = []
    for iface in state.interfaces.values():
        out += [iface.private_key.reveal(), iface.conf_text.reveal()]
        for p in iface.peers.values():
            out += [s.reveal() for s in (p.preshared_key, p.private_key) if s]
    return out


@pytest.fixture
def keys(tmp_path: Path) -> secrets.RecoveryKeys:
    return secrets.init_recovery(str(tmp_path / "recovery.key"))


def test_no_clear_secret_in_the_spool_and_writer_values_are_the_same(tmp_path: Path, keys) -> None:
    state = synthetic_state("host-sp", interfaces=2, peers=30, collected_at=T0)
    sp = spool.Spool(str(tmp_path / "state"), 10**8, 3600.0)
    sp.append(state, uuid.uuid4(), T0, keys.public)
    sp.close()
    path = tmp_path / "state" / spool.FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(spool.FILE_NAME))
    bodies = [zlib.decompress(r[0]) for r in sqlite3.connect(path).execute("SELECT body FROM cycles")]
    assert len(bodies) == 1
    for value in clear_secrets(state):
        assert value.encode() not in bodies[0] and value.encode() not in raw
    back = spooled.decode(sp_body(path))
    assert back.collected_at == T0 and back.sources == state.sources and back.errors == state.errors
    for name, iface in state.interfaces.items():
        other = back.interfaces[name]
        assert writer.interface_values(other) == writer.interface_values(iface)
        for key, peer in iface.peers.items():
            assert writer.peer_values(other.peers[key]) == writer.peer_values(peer)
            assert (other.peers[key].rx_bytes, other.peers[key].tx_bytes) == (peer.rx_bytes, peer.tx_bytes)
        with pytest.raises(RuntimeError, match="no clear value"):
            other.private_key.reveal()
    # the config version content is the same, and its sealed blob opens to the clear secrets
    live = versions.build_content(state, keys.public, None)
    spooled_content = versions.build_content(back, keys.public, None)
    assert spooled_content.sha256 == live.sha256
    for name in state.interfaces:
        opened = secrets.unseal_json(keys.private, spooled_content.presealed[name], name)
        assert opened == versions.interface_secrets(state.interfaces[name])


def sp_body(path: Path) -> bytes:
    return sqlite3.connect(path).execute("SELECT body FROM cycles ORDER BY id LIMIT 1").fetchone()[0]


def outage_states(n: int) -> list[Any]:
    """n cycles a minute apart: traffic grows, a peer is added at 2 and removed at 4."""
    states = []
    extra = fake_key("spool-transient")
    for i in range(n):
        st = synthetic_state("host-sp", interfaces=1, peers=5, collected_at=T0 + timedelta(minutes=i))
        for p in st.interfaces["wg0"].peers.values():
            p.rx_bytes, p.tx_bytes = 1000 * (i + 1), 3000 * (i + 1)
        if 2 <= i < 4:
            st.interfaces["wg0"].peers[extra] = Peer(
                public_key=extra,
                preshared_key=Secret(fake_key("psk-transient")),
                allowed_ips=("10.9.9.9/32",),
                rx_bytes=10 * i,
                tx_bytes=20 * i,
                seen_by=(Source.KERNEL, Source.CONF),
            )
        states.append(st)
    return states


def replay_all(sp: spool.Spool, conn: Any, key: str, fail_after: int | None = None) -> int:
    """spool.replay with the daemon's write; optionally close the connection after N writes."""
    written = [0]

    def write(state: Any, entry: spool.Entry) -> None:
        if fail_after is not None and written[0] == fail_after:
            conn.close()  # the database goes away mid-replay
        store.write_cycle(
            conn,
            state,
            sync_id=entry.sync_id,
            started_at=entry.started_at,
            agent_version="t",
            recovery_public_key=entry.recovery_key,
            as_of=state.collected_at,
        )
        written[0] += 1

    return spool.replay(sp, conn, "host-sp", write)


@pytest.mark.postgres
def test_replay_writes_every_cycle_in_order_and_resumes_without_duplicates(
    tmp_path: Path, db_config: DatabaseConfig, conn: Any, keys
) -> None:
    states = outage_states(6)
    sp = spool.Spool(str(tmp_path), 10**8, 10**9)
    ids = [uuid.uuid4() for _ in states]
    for st, sid in zip(states, ids, strict=True):
        sp.append(st, sid, st.collected_at, keys.public)
    # entry 0 was committed but the spool did not hear of it (crash between COMMIT and forget)
    e0 = sp.oldest(1)[0]
    store.write_cycle(
        conn,
        spooled.decode(e0.body),
        sync_id=e0.sync_id,
        started_at=e0.started_at,
        agent_version="t",
        recovery_public_key=keys.public,
        as_of=states[0].collected_at,
    )
    with pytest.raises(store.StoreError):
        replay_all(sp, conn, keys.public, fail_after=2)  # cut after 2 more
    assert sp.depth().cycles == 3
    conn2 = store.connect(db_config)
    try:
        assert replay_all(sp, conn2, keys.public) == 3
        assert sp.depth().cycles == 0
        rows = conn2.execute(
            "SELECT sync_id, status FROM sync_status WHERE host_id = 'host-sp' ORDER BY started_at"
        ).fetchall()
        assert [r[0] for r in rows] == ids, "each cycle exactly once, in order"
        # the transient peer is in the history; versions are stamped with the time they were read
        vers = conn2.execute(
            "SELECT version, created_at, doc FROM config_versions WHERE host_id = 'host-sp' ORDER BY version"
        ).fetchall()
        assert [v[1] for v in vers] == [states[i].collected_at for i in (0, 2, 4)]
        peers_per_version = [len(v[2]["interfaces"]["wg0"]["peers"]) for v in vers]
        assert peers_per_version == [5, 6, 5]
        assert all(v[2]["interfaces"]["wg0"]["secrets"]["sealed_to"] for v in vers)
        sealed = conn2.execute("SELECT count(*) FROM config_secrets WHERE host_id = 'host-sp'").fetchone()[0]
        assert sealed == 2  # versions 1 and 3 hold the same secrets: one blob
        # traffic deltas at their original times, totals = sum of deltas = the last counters
        traffic = conn2.execute(
            "SELECT observed_at, sum(rx_delta), sum(tx_delta) FROM peer_traffic WHERE host_id = 'host-sp' "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert [t[0] for t in traffic] == [s.collected_at for s in states]
        conn2.rollback()
        stats = store.load_peer_stats(conn2, "host-sp")
        assert sum(s.rx_total for s in stats) == sum(t[1] for t in traffic)
        regular = [s for s in stats if s.public_key != fake_key("spool-transient")]
        assert all(s.rx_total == 6000 and s.tx_total == 18000 for s in regular)
        conn2.rollback()
    finally:
        conn2.close()


def test_bounds_drop_the_oldest_with_a_warning(tmp_path: Path, caplog) -> None:
    states = outage_states(5)
    sp = spool.Spool(str(tmp_path), 10**8, 10**9)
    size = len(spooled.encode(states[0], None))
    sp.max_bytes = int(size * 3.5)  # room for three
    with caplog.at_level(logging.WARNING, logger="wgsyncd.spool"):
        for st in states:
            sp.append(st, uuid.uuid4(), st.collected_at, None)
    assert sp.depth().cycles == 3 and sp.dropped == 2
    warnings = [r.getMessage() for r in caplog.records if "spool over its bound" in r.getMessage()]
    assert len(warnings) == 2 and "dropped the 1 oldest" in warnings[0]
    oldest = [spooled.decode(e.body).collected_at for e in sp.oldest()]
    assert oldest == [s.collected_at for s in states[2:]]
    # age: everything older than max_age is dropped, except the newest
    sp.max_age = 1.0
    assert sp.enforce_bounds(now=(T0 + timedelta(hours=1)).timestamp()) == 2
    assert sp.depth().cycles == 1


def test_an_unwritable_spool_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(spool.SpoolError, match=r"file/state/spool.sqlite: cannot open the spool"):
        spool.Spool(str(blocker / "state"), 10**6, 10.0)


def test_damaged_entry_is_dropped_not_a_crash(tmp_path: Path) -> None:
    sp = spool.Spool(str(tmp_path), 10**8, 10**9)
    st = outage_states(1)[0]
    sp.append(st, uuid.uuid4(), T0, None)
    with sp.db:
        sp.db.execute("UPDATE cycles SET body = ?", (b"garbage",))

    class NoDB:
        closed = False

    called = []
    from wgsyncd.store import replay as store_replay

    orig = store_replay.committed
    store_replay.committed = lambda *a: set()
    try:
        assert spool.replay(sp, NoDB(), "host-sp", lambda s, e: called.append(e)) == 1
    finally:
        store_replay.committed = orig
    assert called == [] and sp.depth().cycles == 0


def test_a_dataclass_field_added_to_state_is_spooled() -> None:
    """Guard: every Interface/Peer field survives encode/decode (a new field must not be lost)."""
    st = outage_states(3)[2]
    back = spooled.decode(spooled.encode(st, None))
    for name, iface in st.interfaces.items():
        for f in dataclasses.fields(iface):
            if f.name in ("peers", "private_key", "conf_text"):
                continue
            assert getattr(back.interfaces[name], f.name) == getattr(iface, f.name), f.name
        for key, peer in iface.peers.items():
            for f in dataclasses.fields(peer):
                if f.name in ("preshared_key", "private_key"):
                    continue
                assert getattr(back.interfaces[name].peers[key], f.name) == getattr(peer, f.name), f.name


del os, tempfile


@pytest.mark.postgres
def test_a_committed_cycle_replayed_past_the_status_window_adds_no_traffic(
    tmp_path: Path, conn: Any, keys
) -> None:
    """A cycle committed but not forgotten (crash between COMMIT and forget), then the host off
    longer than the spool's age + 1 day: the spool still replays its newest entry (bounds are
    enforced on append only, and the newest entry is always kept), and thinning (migration 0010)
    may have removed the status row that tells the replay it is in. The replay then writes the
    cycle again, but its deltas are taken against the stored counters: no traffic twice, one
    status row for the cycle."""
    from wgsyncd.store import retention

    now = datetime.now(UTC).replace(microsecond=0)
    hour = now.replace(minute=0, second=0) - timedelta(days=10)
    first = synthetic_state("host-sp", interfaces=1, peers=5, collected_at=hour + timedelta(minutes=1))
    late = synthetic_state("host-sp", interfaces=1, peers=5, collected_at=hour + timedelta(minutes=2))
    for p in late.interfaces["wg0"].peers.values():
        p.rx_bytes, p.tx_bytes = p.rx_bytes + 500, p.tx_bytes + 700
    sp = spool.Spool(str(tmp_path), 10**8, 3600.0)  # spool_max_age: an hour
    sid = uuid.uuid4()
    for st, s in ((first, uuid.uuid4()), (late, sid)):
        store.write_cycle(
            conn,
            st,
            sync_id=s,
            started_at=st.collected_at,
            agent_version="t",
            recovery_public_key=keys.public,
            as_of=st.collected_at,
        )
    sp.append(late, sid, late.collected_at, keys.public)  # committed, never forgotten
    assert sp.depth().cycles == 1, "the newest entry is kept whatever its age"

    def traffic() -> int:
        with conn.transaction():
            row = conn.execute(
                "SELECT sum(rx_delta + tx_delta) FROM peer_traffic WHERE host_id = 'host-sp'"
            ).fetchone()
        return int(row[0] or 0)

    before = traffic()
    spool_age = timedelta(seconds=3600)
    hourly = retention.Hourly(traffic_after=timedelta(hours=24), status_after=spool_age + timedelta(days=1))
    while retention.prune(conn, "host-sp", now, 90, hourly).backlog():
        pass
    with conn.transaction():
        kept = conn.execute("SELECT count(*) FROM sync_status WHERE sync_id = %s", (sid,)).fetchone()
    assert kept == (1,), "the host's newest row is never thinned (it has no next row)"
    replay_all(sp, conn, keys.public)
    assert traffic() == before, "the replayed cycle's deltas were added a second time"
    with conn.transaction():
        again = conn.execute("SELECT count(*) FROM sync_status WHERE sync_id = %s", (sid,)).fetchone()
    assert again == (1,)
