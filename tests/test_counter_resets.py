"""Issue 16 item 8: a restart the counters cannot show is still a reset.

Interface identity (sources/identity.py) and a peer coming back after a complete
read without it both count; the stored reading is never subtracted from a counter
that restarted, even one that already grew past it. Against the real writer and
PostgreSQL; the identity itself against real network interfaces.
"""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.beds import unavailable
from tests.beds.postgres import fake_key
from wgsyncd import store
from wgsyncd.sources import identity
from wgsyncd.state import HostState, Interface, Peer, Source
from wgsyncd.store.writer import counters_reset

T0 = datetime(2031, 1, 1, tzinfo=UTC)
KEY = fake_key("reset-peer")


def state(n: int, rx: int | None, tx: int | None, iface_id: str | None = "boot:ns:7") -> HostState:
    """Minute ``n``: one interface; the peer only when rx is given (None = absent this read)."""
    iface = Interface(name="wg0", public_key=fake_key("reset-if"), seen_by=(Source.KERNEL,))
    if rx is not None:
        iface.peers[KEY] = Peer(
            public_key=KEY, allowed_ips=("10.0.0.2/32",), rx_bytes=rx, tx_bytes=tx, seen_by=(Source.KERNEL,)
        )
    st = HostState(
        host_id="host-r", hostname="r", collected_at=T0 + timedelta(minutes=n), interfaces={"wg0": iface}
    )
    st.sources = {Source.KERNEL: True}
    if iface_id is not None:
        st.interface_ids = {"wg0": iface_id}
    return st


def run(conn: psycopg.Connection[Any], states: list[HostState]) -> list[tuple[int, int]]:
    """Write each state; return the deltas recorded per cycle (0, 0 where none)."""
    for st in states:
        store.write_cycle(conn, st, sync_id=uuid.uuid4(), started_at=st.collected_at, agent_version="t")
    rows = conn.execute(
        "SELECT observed_at, rx_delta, tx_delta FROM peer_traffic WHERE host_id = 'host-r'"
    ).fetchall()
    conn.rollback()
    by_time = {r[0]: (r[1], r[2]) for r in rows}
    return [by_time.get(st.collected_at, (0, 0)) for st in states]


def test_pure_rule() -> None:
    old = (None, 1000, 2000, 1000, 2000, "a")
    assert not counters_reset(None, 5, 5, "a", False)
    assert not counters_reset(old, 1500, 2500, "a", False)
    assert counters_reset(old, 999, 2500, "a", False)  # went down
    assert counters_reset(old, 1500, 2500, "b", False)  # another incarnation, already grown past
    assert not counters_reset(old, 1500, 2500, None, False)  # unknown now decides nothing
    assert not counters_reset((*old[:5], None), 1500, 2500, "b", False)  # unknown before either
    assert counters_reset(old, 1500, 2500, "a", True)  # peer came back


@pytest.mark.postgres
def test_new_interface_incarnation_counts_the_whole_new_counter(conn: psycopg.Connection[Any]) -> None:
    # wireguard-go restarted between minute 1 and 2; by minute 2 the new counters (1500, 2500)
    # already exceed the stored ones (1000, 2000): 1500/2500 are new bytes, not 500/500
    deltas = run(conn, [state(0, 400, 800), state(1, 1000, 2000), state(2, 1500, 2500, "boot:ns:9")])
    assert deltas == [(400, 800), (600, 1200), (1500, 2500)]
    [s] = store.load_peer_stats(conn, "host-r")
    assert (s.rx_total, s.tx_total) == (2500, 4500)


@pytest.mark.postgres
def test_same_incarnation_is_not_a_reset(conn: psycopg.Connection[Any]) -> None:
    deltas = run(conn, [state(0, 400, 800), state(1, 1000, 2000), state(2, 1500, 2500)])
    assert deltas == [(400, 800), (600, 1200), (500, 500)]


@pytest.mark.postgres
def test_peer_removed_then_back_restarts_its_counters(conn: psycopg.Connection[Any]) -> None:
    # minute 2: a complete read without the peer (removed); minute 3: re-added, already past
    deltas = run(conn, [state(0, 400, 800), state(1, 1000, 2000), state(2, None, None), state(3, 1200, 2100)])
    assert deltas == [(400, 800), (600, 1200), (0, 0), (1200, 2100)]
    [s] = store.load_peer_stats(conn, "host-r")
    assert (s.rx_total, s.tx_total) == (2200, 4100)


@pytest.mark.postgres
def test_rows_without_identity_keep_the_old_rule(conn: psycopg.Connection[Any]) -> None:
    deltas = run(conn, [state(0, 400, 800, None), state(1, 1000, 2000, "x"), state(2, 100, 50, "x")])
    assert deltas == [(400, 800), (600, 1200), (100, 50)]  # unknown -> known: no reset; down: reset


@pytest.mark.root
def test_identity_changes_when_a_real_interface_is_recreated() -> None:
    name = "wgsid" + uuid.uuid4().hex[:6]
    if subprocess.run(["ip", "tuntap", "add", "name", name, "mode", "tun"], capture_output=True).returncode:
        unavailable("netlink", "cannot create a TUN interface (root needed)")
    try:
        first = identity.identities([name, "no-such-if0"])
        assert set(first) == {name}
        assert identity.identities([name]) == first  # stable while it lives
        subprocess.run(["ip", "link", "del", name], check=True)
        subprocess.run(["ip", "tuntap", "add", "name", name, "mode", "tun"], check=True)
        second = identity.identities([name])
        assert second[name] != first[name]
        assert identity.stable(first, second) == {}
        assert identity.stable(second, identity.identities([name])) == second
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)
