"""The writer's planning without a database (store/plan.py, store/known.py's same_state).

Each test builds the host's "current rows" the way the writer would have them after
a commit (plan.apply on a view), so the rules are checked exactly as write_cycle
applies them, on any psycopg (these run on Debian's libraries too).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import uuid
from datetime import UTC, datetime, timedelta

from wgsyncd.state import HostState, Interface, Peer, Secret, Source, SourceError
from wgsyncd.store import plan
from wgsyncd.store.known import Gone, HostMemo, View

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
K, C = Source.KERNEL, Source.CONF


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def state_of(*ifaces: Interface, errors=(), at: datetime = NOW) -> HostState:
    st = HostState("h", "h", at, interfaces={i.name: i for i in ifaces}, errors=list(errors))
    st.sources = {K: not any(e.interface is None for e in errors), C: True}
    return st


def peer(pub: str, rx: int = 0, tx: int = 0, **kw) -> Peer:
    return Peer(pub, allowed_ips=("10.0.0.1/32",), rx_bytes=rx, tx_bytes=tx, provenance={"rx_bytes": K}, **kw)


def empty_rows() -> plan.Loaded:
    return plan.Loaded(plan.Current(), plan.Current(), {}, {}, 0.0)


def cycle(st: HostState, memo: HostMemo, rows: plan.Loaded, committed=None) -> tuple[plan.Plan, View]:
    """One planned and 'committed' cycle: the view is what the database holds afterwards."""
    p, view = plan.make_plan(st, st.collected_at, None, memo, rows, committed)
    plan.apply(view, p, uuid.uuid4(), None)
    return p, view


def test_a_new_host_inserts_every_row_and_its_counters():
    a, b, pub = key(), key(), key()
    st = state_of(Interface("wg0", public_key=pub, peers={a: peer(a, rx=10), b: peer(b)}))
    p, view = cycle(st, HostMemo(), empty_rows())
    assert (p.counts["interfaces"].inserted, p.counts["peers"].inserted) == (1, 2)
    assert [r[1:3] for r in p.upserts["peers"]] == [("wg0", a), ("wg0", b)]
    assert [(r[1], r[2], r[6]) for r in p.server_keys] == [("wg0", pub, None)]
    assert [(r[2], r[4]) for r in p.stats] == [(a, 10), (b, 0)]
    assert [(r[2], r[4]) for r in p.traffic] == [(a, 10)]  # only non-zero deltas
    assert not p.empty and type(view.hashes["peers"][("wg0", a)]) is str


def test_the_same_state_again_plans_nothing():
    """What HostMemo.same_state relies on: planning a committed state again is empty."""
    a = key()
    st = state_of(Interface("wg0", public_key=key(), peers={a: peer(a, rx=5)}))
    memo = HostMemo()
    _p, view = cycle(st, memo, empty_rows())
    committed = {("wg0", a): st.interfaces["wg0"].peers[a]}
    again, _ = cycle(st, memo, plan.Loaded.from_view(view), committed)
    assert again.empty
    # an equal copy (new objects, same values) plans nothing either: compared, not trusted
    copy = state_of(dataclasses.replace(st.interfaces["wg0"], peers={a: peer(a, rx=5)}))
    assert cycle(copy, memo, plan.Loaded.from_view(view), committed)[0].empty


def test_counters_become_deltas_and_survive_an_interface_restart():
    a = key()
    memo = HostMemo()
    _p, view = cycle(state_of(Interface("wg0", peers={a: peer(a, rx=100, tx=50)})), memo, empty_rows())
    p, view = cycle(
        state_of(Interface("wg0", peers={a: peer(a, rx=160, tx=50)})), memo, plan.Loaded.from_view(view)
    )
    assert [(r[4], r[5]) for r in p.traffic] == [(60, 0)] and p.stats[0][6] == 160  # rx_total
    # the interface restarted: the counter went down, so it counts from zero again
    p, _view = cycle(
        state_of(Interface("wg0", peers={a: peer(a, rx=30, tx=50)})), memo, plan.Loaded.from_view(view)
    )
    assert [(r[4], r[5]) for r in p.traffic] == [(30, 50)] and p.stats[0][6] == 190
    assert plan.counter_delta(30, 160, False) == 30 and plan.counter_delta(200, 160, False) == 40


def test_a_missing_peer_is_removed_only_after_a_complete_read():
    a, b = key(), key()
    memo = HostMemo()
    _p, view = cycle(state_of(Interface("wg0", peers={a: peer(a), b: peer(b)})), memo, empty_rows())
    only_a = Interface("wg0", peers={a: peer(a)})
    err = SourceError(K, "wg0", "read failed", interface="wg0")
    p, _ = cycle(state_of(only_a, errors=[err]), memo, plan.Loaded.from_view(view))
    assert p.removals["peers"] == [] and p.counts["peers"].removed == 0
    p, view = cycle(state_of(only_a), memo, plan.Loaded.from_view(view))
    assert p.removals["peers"] == [("wg0", b)] and type(view.hashes["peers"][("wg0", b)]) is Gone


def test_a_gone_interface_retires_its_server_key():
    pub = key()
    memo = HostMemo()
    _p, view = cycle(state_of(Interface("wg0", public_key=pub)), memo, empty_rows())
    p, view = cycle(state_of(at=NOW + timedelta(minutes=1)), memo, plan.Loaded.from_view(view))
    assert p.removals["interfaces"] == [("wg0",)]
    assert [(r[2], r[6]) for r in p.server_keys] == [(pub, NOW + timedelta(minutes=1))]
    assert view.keys[("wg0", pub)][1] is not None


def test_a_changed_field_updates_one_row_with_a_new_hash():
    a, b = key(), key()
    memo = HostMemo()
    st = state_of(Interface("wg0", peers={a: peer(a), b: peer(b)}))
    _p, view = cycle(st, memo, empty_rows())
    old_hash = view.hashes["peers"][("wg0", b)]
    psk = Secret(key())
    bob = peer(b, name="bob", preshared_key=psk)
    changed = state_of(Interface("wg0", peers={a: st.interfaces["wg0"].peers[a], b: bob}))
    p, view = cycle(changed, memo, plan.Loaded.from_view(view))
    assert p.counts["peers"].updated == 1 and [r[2] for r in p.upserts["peers"]] == [b]
    assert view.hashes["peers"][("wg0", b)] != old_hash
    # row values hold the key's fingerprint, never the key
    assert psk.reveal() not in str(p.upserts) and psk.fingerprint() in str(p.upserts)


def test_same_state_is_object_identity_of_a_complete_read():
    a = key()
    iface = Interface("wg0", peers={a: peer(a)})
    st = state_of(iface)
    memo = HostMemo()
    assert not memo.same_state(st)  # nothing committed yet
    memo.remember(st)
    assert memo.same_state(state_of(iface, at=NOW + timedelta(minutes=1)))  # a new cycle, same objects
    assert not memo.same_state(state_of(Interface("wg0", peers={a: peer(a)})))  # equal is not enough
    iface.peers[a] = peer(a, rx=1)  # a peer replaced inside the same Interface object
    assert not memo.same_state(state_of(iface))
    memo.remember(state_of(iface))
    err = SourceError(C, "wg0.conf", "bad line", interface="wg0")
    assert not memo.same_state(state_of(iface, errors=[err]))  # incomplete: never the short cut
    other = state_of(iface)
    other.interface_ids = {"wg0": "another incarnation"}
    assert not memo.same_state(other)


def test_same_state_never_follows_an_incomplete_commit():
    """An incomplete cycle kept stored values and removed nothing: the same objects read
    completely next time must be planned again, not skipped."""
    iface = Interface("wg0", peers={})
    memo = HostMemo()
    err = SourceError(C, "wg0.conf", "bad line", interface="wg0")
    memo.remember(state_of(iface, errors=[err]))
    assert not memo.same_state(state_of(iface))
    memo.remember(state_of(iface))
    assert memo.same_state(state_of(iface))
