"""mergerow: the per-shape peer merge gives exactly what the general rules give, peer by peer."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from wgsyncd import mergerow
from wgsyncd.mergerow import RowMerge
from wgsyncd.mergerules import PEER_DRIFT, PEER_PRECEDENCE, field_drift, merge_object, peer_presence
from wgsyncd.state import Drift, DriftKind, Peer, Secret, Source, shared

PUB = base64.b64encode(bytes(range(32))).decode()
_FIELDS = tuple(PEER_PRECEDENCE)

# few values per field, so sources often agree (the fast path) and sometimes do not
_VALUES = {
    "preshared_key": st.sampled_from([None, Secret("a" * 43 + "="), Secret("b" * 43 + "=")]),
    "allowed_ips": st.sampled_from(
        [None, (), ("10.0.0.1/32",), ("10.0.0.1/32", "fd00::/64"), ("10.0.0.5/32",)]
    ),
    "endpoint": st.sampled_from([None, "192.0.2.1:51820", "[fd00::1]:51820", "vpn.example:1"]),
    "persistent_keepalive": st.sampled_from([None, 0, 25]),
    "latest_handshake": st.sampled_from([None, datetime(2026, 11, 1, tzinfo=UTC)]),
    "rx_bytes": st.sampled_from([None, 0, 7]),
    "tx_bytes": st.sampled_from([None, 0, 9]),
    "name": st.sampled_from([None, "alice", "bob"]),
    "comments": st.sampled_from([None, (), ("# alice",)]),
    "disabled": st.sampled_from([None, False, True]),
    "private_key": st.sampled_from([None, Secret("c" * 43 + "=")]),
}


@st.composite
def copies(draw: st.DrawFn) -> Peer:
    """One source's copy: random values, and a provenance naming a random subset of fields."""
    values = {name: draw(strategy) for name, strategy in _VALUES.items()}
    vouched = draw(st.sets(st.sampled_from(_FIELDS)))
    provenance = shared({f: Source.KERNEL for f in ("public_key", *sorted(vouched))})
    return Peer(PUB, **values, provenance=provenance)


@st.composite
def rows(draw: st.DrawFn) -> tuple[tuple[Source, ...], tuple[Peer | None, ...]]:
    """The sources reading the interface and each one's copy (None: it lacks the peer; not all None)."""
    readers = tuple(s for s in Source if draw(st.booleans())) or (Source.KERNEL,)
    row = tuple(draw(st.none() | copies()) for _ in readers)
    if all(p is None for p in row):
        row = (draw(copies()), *row[1:])
    return readers, row


def reference(readers: tuple[Source, ...], row: tuple[Peer | None, ...]) -> tuple[Peer, tuple[Drift, ...]]:
    """merge's general rules applied to one peer (what merge did per peer before the plans)."""
    objs = {s: p for s, p in zip(readers, row, strict=True) if p is not None}
    merged = merge_object(Peer, {"public_key": PUB}, objs, PEER_PRECEDENCE)
    drift = peer_presence("wg0", PUB, objs, list(readers))
    drift += field_drift(objs, PEER_DRIFT, lambda f, v: Drift("wg0", PUB, f, DriftKind.DIFFERS, v))
    return merged, tuple(drift)


@settings(max_examples=400, deadline=None)
@given(rows())
def test_row_merge_equals_the_general_rules(case) -> None:
    """Same merged values, provenance, seen_by and drift; twice, so the second comes from the plan."""
    readers, row = case
    want_peer, want_drift = reference(readers, row)
    for _ in range(2):
        peer, drift = RowMerge("wg0", readers).peer(PUB, row)
        assert peer == want_peer
        assert peer.provenance == want_peer.provenance and peer.seen_by == want_peer.seen_by
        assert drift == want_drift


def test_a_full_plan_table_still_merges_right(monkeypatch) -> None:
    """The plan cache is bounded: past PLANS_MAX, peers are merged the long way, not wrongly."""
    monkeypatch.setattr(mergerow, "_PLANS", {})
    monkeypatch.setattr(mergerow, "PLANS_MAX", 0)
    kernel = Peer(
        PUB,
        allowed_ips=("10.0.0.1/32",),
        endpoint="192.0.2.1:1",
        provenance=shared({"allowed_ips": Source.KERNEL}),
    )
    conf = Peer(PUB, allowed_ips=("10.0.0.2/32",), name="alice", provenance=shared({"name": Source.CONF}))
    readers, row = (Source.KERNEL, Source.CONF), (kernel, conf)
    peer, drift = RowMerge("wg0", readers).peer(PUB, row)
    assert (peer, drift) == reference(readers, row) and not mergerow._PLANS
    assert peer.allowed_ips == ("10.0.0.1/32",) and peer.name == "alice" and drift[0].field == "allowed_ips"
