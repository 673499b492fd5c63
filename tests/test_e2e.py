"""End to end: real wireguard-go + conf files + a wgrest server -> `wgsyncd sync` -> PostgreSQL.

Everything is real and runs through the installed CLI in a subprocess, the way an
operator runs it (the simulated host is tests/beds/host.py). The reference for "what
is running" is `wg show NAME dump`, parsed there independently of wgsyncd's own parser.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import psycopg
import pytest

from tests.beds.host import Host, parse_dump, peer_name, peers_by_key
from tests.beds.wireguard import PeerSpec, random_key
from wgsyncd import store

pytestmark = pytest.mark.postgres


@pytest.fixture
def host(tmp_path, wg_bed, pg_cluster):
    return Host(tmp_path, wg_bed, pg_cluster.create_database(), "host-e2e")


def test_sync_500_peers_rows_equal_wg_dump_with_names(host, make_wgrest):
    a = host.add_interface(300, disabled=PeerSpec(public_key=random_key()))
    b = host.add_interface(200)
    wgrest = make_wgrest("v1")
    from wgsyncd.sources import kernel as kernel_source

    for name, iface in host.ifaces.items():
        wgrest.load_state(kernel_source.parse_wg_dump(iface.dump(), name).values())
    host.wgrest_url = wgrest.url
    host.write_config()

    out = host.wgsyncd("sync")
    assert "synced 2 interfaces" in out.stdout, out.stdout + out.stderr

    rows = peers_by_key(host.dsn, host.host_id)
    for name, iface in host.ifaces.items():
        _, dump = parse_dump(iface.dump())
        for pub, d in dump.items():
            row = rows.pop((name, pub))
            assert row.allowed_ips == d.allowed_ips
            assert row.endpoint == d.endpoint
            assert (row.persistent_keepalive or 0) == d.keepalive
            assert row.has_preshared_key is (d.preshared_key is not None)
            assert row.name == peer_name(pub)
            assert row.removed_at is None
            assert set(row.sources) == {"kernel", "conf", "wgrest"}
    # what is left is the disabled peer of the conf file, and nothing else
    (left,) = rows.values()
    assert (left.interface, left.public_key, left.disabled) == (a, host.disabled[a].public_key, True)
    assert left.sources == ["conf"]
    with psycopg.connect(host.dsn) as conn:
        ifaces = {i.name: i for i in store.load_interfaces(conn, host.host_id)}
        keys = store.load_server_keys(conn, host.host_id)
    assert set(ifaces) == {a, b}
    assert ifaces[a].post_up == ["iptables -A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT"]
    assert ifaces[a].addresses == ["10.99.0.1/24", "fd99::1/64"] and ifaces[a].mtu == 1420
    assert {k.public_key for k in keys} == {parse_dump(i.dump())[0][1] for i in host.ifaces.values()}


def _versions(dsn: str, host_id: str) -> dict[tuple[str, str], tuple[int, object, object]]:
    return {k: (r.version, r.updated_at, r.removed_at) for k, r in peers_by_key(dsn, host_id).items()}


def test_idle_sync_writes_nothing_and_changes_touch_exactly_their_rows(host):
    a = host.add_interface(60)
    host.write_config()
    host.wgsyncd("sync")
    before = _versions(host.dsn, host.host_id)
    with psycopg.connect(host.dsn) as conn:
        if_before = [(i.name, i.version, i.updated_at) for i in store.load_interfaces(conn, host.host_id)]

    out = host.wgsyncd("sync")
    assert _versions(host.dsn, host.host_id) == before
    with psycopg.connect(host.dsn) as conn:
        assert [
            (i.name, i.version, i.updated_at) for i in store.load_interfaces(conn, host.host_id)
        ] == if_before
    assert "rows written" not in out.stdout  # the summary names written rows only when there are some

    specs = host.specs[a]
    removed, changed = specs[5], specs[6]
    added = PeerSpec(public_key=random_key(), allowed_ips=("10.99.77.1/32",), persistent_keepalive=15)
    specs.remove(removed)
    changed.allowed_ips = (*changed.allowed_ips, "10.99.66.0/24")
    specs.append(added)
    host.apply(a)
    host.wgsyncd("sync")
    after = _versions(host.dsn, host.host_id)

    diff = {k for k in after if after[k] != before.get(k)}
    assert diff == {(a, removed.public_key), (a, changed.public_key), (a, added.public_key)}
    assert after[(a, removed.public_key)][2] is not None  # marked removed, not deleted
    assert after[(a, changed.public_key)][0] == before[(a, changed.public_key)][0] + 1
    assert after[(a, added.public_key)][0] == 1


def test_handshake_counters_land_and_totals_survive_restart(tmp_path, wg_pair, pg_cluster):
    host = Host(tmp_path, None, pg_cluster.create_database(), "host-pair")
    host.ifaces = {wg_pair.a.name: wg_pair.a}
    host.write_config()
    wg_pair.ping(3)
    host.wgsyncd("sync")
    with psycopg.connect(host.dsn) as conn:
        (s1,) = store.load_peer_stats(conn, host.host_id)
    assert s1.latest_handshake is not None and s1.rx_bytes > 0 and s1.tx_bytes > 0
    assert (s1.rx_total, s1.tx_total) == (s1.rx_bytes, s1.tx_bytes)

    wg_pair.a.restart()  # counters back to 0, like an interface restart
    wg_pair.ping(1)
    host.wgsyncd("sync")
    with psycopg.connect(host.dsn) as conn:
        (s2,) = store.load_peer_stats(conn, host.host_id)
        rx_sum, tx_sum = conn.execute(
            "SELECT sum(rx_delta), sum(tx_delta) FROM peer_traffic WHERE host_id = %s", (host.host_id,)
        ).fetchone()
    assert s2.rx_bytes < s1.rx_bytes  # the reset really happened
    assert s2.rx_total >= s1.rx_total + s2.rx_bytes and s2.tx_total >= s1.tx_total + s2.tx_bytes
    assert (rx_sum, tx_sum) == (s2.rx_total, s2.tx_total)


def test_two_hosts_sync_concurrently_into_one_db(tmp_path, wg_bed, pg_cluster):
    dsn = pg_cluster.create_database()
    hosts = []
    for hid in ("host-x", "host-y"):
        h = Host(tmp_path, wg_bed, dsn, hid)
        h.add_interface(150)
        h.write_config()
        hosts.append(h)
    hosts[0].wgsyncd("db", "migrate")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WGSYNCD_")}
    script = "for i in 1 2 3 4 5; do {py} -m wgsyncd --config {cfg} sync || exit 1; done"
    procs = [
        subprocess.Popen(
            ["sh", "-c", script.format(py=sys.executable, cfg=h.config)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for h in hosts
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, out + err
    with psycopg.connect(dsn) as conn:
        for h in hosts:
            rows = store.load_peers(conn, h.host_id)
            assert len(rows) == 150 and all(r.removed_at is None for r in rows)
            assert {r.interface for r in rows} == set(h.ifaces)
            statuses = store.status(conn, h.host_id, limit=20)
            assert len(statuses) == 5 and {s.status for s in statuses} == {"ok"}


def test_reused_objects_are_never_edited_and_warm_cycles_write_what_cold_ones_do(host, make_wgrest):
    """A running agent reuses source, merged and row objects between cycles; that is only
    sound if nothing edits them after they are built. Snapshot the reused objects, run
    more cycles (one with a real config change), compare; then a cold process must find
    nothing to write: the warm agent left the database as a cold run would."""
    import copy
    import uuid
    from datetime import UTC, datetime

    from wgsyncd import config, cycle
    from wgsyncd.memo import Memo
    from wgsyncd.sources import kernel as kernel_source

    name = host.add_interface(40)
    wgrest = make_wgrest("v1")
    wgrest.load_state(kernel_source.parse_wg_dump(host.ifaces[name].dump(), name).values())
    host.wgrest_url = wgrest.url
    host.write_config()
    cfg = config.load(str(host.config))
    conn = store.connect(cfg.database)
    store.migrate(conn)

    memo = Memo()  # what the daemon keeps between cycles

    def one() -> dict[str, object]:
        state = cycle.collect(cfg, memo)
        store.write_cycle(conn, state, sync_id=uuid.uuid4(), started_at=datetime.now(UTC), agent_version="t")
        return state.interfaces[name].peers

    try:
        peers = list(one().values())
        frozen = copy.deepcopy(peers)
        again = one()
        assert sum(any(p is q for q in peers) for p in again.values()) == 40  # all reused
        # a real change: the first peer gets a keepalive in the conf and the kernel
        host.specs[name][0] = dataclasses.replace(host.specs[name][0], persistent_keepalive=25)
        host.apply(name)
        changed = one()
        assert changed[host.specs[name][0].public_key].persistent_keepalive == 25
        assert peers == frozen  # the reused objects still hold exactly what they held when built
    finally:
        conn.close()
    out = host.wgsyncd("sync")  # a new process: loads every row and diffs from scratch
    assert "synced 1 interface, 40 peers" in out.stdout and "rows written" not in out.stdout, out.stdout
