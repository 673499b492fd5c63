"""merge: precedence, provenance and drift, on hand-built source results."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime

from wgsyncd.merge import INTERFACE_PRECEDENCE, PEER_PRECEDENCE, field_names, merge
from wgsyncd.state import DriftKind, Interface, Peer, Secret, Source, SourceError, SourceResult

K, C, W = Source.KERNEL, Source.CONF, Source.WGREST
NOW = datetime(2026, 11, 25, tzinfo=UTC)


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def res(source: Source, *ifaces: Interface, errors=(), available=True) -> SourceResult:
    return SourceResult(source, {i.name: i for i in ifaces}, list(errors), available)


def iface(name="wg0", peers=(), **kw) -> Interface:
    return Interface(name=name, peers={p.public_key: p for p in peers}, **kw)


def test_precedence_tables_cover_every_field():
    skip = {"name", "peers", "provenance", "seen_by"}
    assert set(field_names(Interface)) - skip == set(INTERFACE_PRECEDENCE)
    assert set(field_names(Peer)) - {"public_key", "provenance", "seen_by"} == set(PEER_PRECEDENCE)


def test_kernel_wins_runtime_conf_wins_names_and_provenance_is_recorded():
    pk = key()
    kp = Peer(pk, allowed_ips=("10.0.0.2/32",), endpoint="192.0.2.7:51820", rx_bytes=5, tx_bytes=6)
    cp = Peer(pk, allowed_ips=("10.0.0.2/32",), endpoint="vpn.example.org:51820", name="alice")
    wp = Peer(pk, allowed_ips=("10.0.0.2/32",), rx_bytes=1, private_key=Secret(key()))
    state = merge(
        "h1",
        "host",
        [
            res(K, iface(peers=[kp], listen_port=51820, implementation="userspace")),
            res(C, iface(peers=[cp], listen_port=51820, mtu=1420, post_up=("iptables --dports 80,443",))),
            res(W, iface(peers=[wp], mtu=1380)),
        ],
        NOW,
    )
    i = state.interfaces["wg0"]
    p = i.peers[pk]
    assert (p.endpoint, p.rx_bytes, p.name) == ("192.0.2.7:51820", 5, "alice")
    assert p.provenance["endpoint"] is K and p.provenance["name"] is C and p.provenance["private_key"] is W
    assert i.mtu == 1420 and i.provenance["mtu"] is C
    assert i.post_up == ("iptables --dports 80,443",)
    assert p.seen_by == (K, C, W) and i.seen_by == (K, C, W)
    assert state.drift == []  # a DNS endpoint in conf is not comparable with the resolved one
    assert not state.partial


def test_peer_only_in_kernel_and_allowed_ips_differ_are_drift():
    a, b = key(), key()
    state = merge(
        "h1",
        "host",
        [
            res(K, iface(peers=[Peer(a, allowed_ips=("10.0.0.2/32",)), Peer(b, allowed_ips=())])),
            res(C, iface(peers=[Peer(a, allowed_ips=("10.0.0.3/32",))])),
        ],
        NOW,
    )
    kinds = {(d.peer, d.field, d.kind) for d in state.drift}
    assert (b, "peer", DriftKind.ONLY_IN) in kinds
    assert (a, "allowed_ips", DriftKind.DIFFERS) in kinds
    only = next(d for d in state.drift if d.peer == b)
    assert dict(only.values) == {"kernel": "present", "conf": "absent"}


def test_allowed_ips_compare_as_networks_and_sets():
    a = key()
    state = merge(
        "h",
        "h",
        [
            res(K, iface(peers=[Peer(a, allowed_ips=("10.0.0.0/24", "fd00::2/128"))])),
            res(C, iface(peers=[Peer(a, allowed_ips=("fd00::2/128", "10.0.0.9/24"))])),
        ],
        NOW,
    )
    assert state.drift == []


def test_disabled_conf_peer_is_not_drift_unless_running():
    a, b = key(), key()
    state = merge(
        "h",
        "h",
        [
            res(K, iface(peers=[Peer(b)])),
            res(C, iface(peers=[Peer(a, disabled=True), Peer(b, disabled=True)])),
        ],
        NOW,
    )
    assert [(d.peer, d.field) for d in state.drift] == [(b, "disabled")]
    assert state.interfaces["wg0"].peers[a].disabled is True


def test_preshared_key_drift_shows_fingerprints_not_keys():
    a, psk1, psk2 = key(), key(), key()
    state = merge(
        "h",
        "h",
        [
            res(K, iface(peers=[Peer(a, preshared_key=Secret(psk1))])),
            res(C, iface(peers=[Peer(a, preshared_key=Secret(psk2))])),
        ],
        NOW,
    )
    (d,) = state.drift
    assert d.field == "preshared_key"
    assert psk1 not in str(d) and psk2 not in str(d)
    assert "fp:" in str(d)


def test_failed_source_makes_partial_and_no_presence_drift_for_it():
    a = key()
    err = SourceError(W, "http://127.0.0.1:1/v1/devices/", "timed out")
    state = merge(
        "h",
        "h",
        [res(K, iface(peers=[Peer(a)])), res(C, iface(peers=[Peer(a)])), res(W, errors=[err])],
        NOW,
    )
    assert state.partial and state.incomplete("wg0")
    assert state.drift == []
    assert state.sources == {K: True, C: True, W: False}


def test_unavailable_source_is_not_partial():
    a = key()
    state = merge("h", "h", [res(K, iface(peers=[Peer(a)])), res(W, available=False)], NOW)
    assert not state.partial and state.drift == []


def test_interface_missing_from_a_healthy_source_is_drift():
    state = merge("h", "h", [res(K, iface("wg0"), iface("wg1")), res(C, iface("wg0"))], NOW)
    assert [(d.interface, d.field, dict(d.values)) for d in state.drift] == [
        ("wg1", "interface", {"kernel": "present", "conf": "absent"})
    ]


def test_interface_error_confined_to_that_interface():
    err = SourceError(C, "/etc/wireguard/wg1.conf:3 PublicKey", "bad key", interface="wg1")
    state = merge("h", "h", [res(K, iface("wg0"), iface("wg1")), res(C, iface("wg0"), errors=[err])], NOW)
    assert state.incomplete("wg1") and not state.incomplete("wg0")
    assert state.drift == []


def test_peer_order_is_kernel_then_conf_then_wgrest():
    a, b, c = key(), key(), key()
    state = merge(
        "h",
        "h",
        [
            res(K, iface(peers=[Peer(b)])),
            res(C, iface(peers=[Peer(a), Peer(b)])),
            res(W, iface(peers=[Peer(c)])),
        ],
        NOW,
    )
    assert list(state.interfaces["wg0"].peers) == [b, a, c]


def test_a_source_vouching_for_none_is_recorded_as_known():
    a = key()
    kp = Peer(a, preshared_key=None, provenance={"preshared_key": K})
    state = merge("h", "h", [res(K, iface(peers=[kp])), res(W, iface(peers=[Peer(a)]))], NOW)
    p = state.interfaces["wg0"].peers[a]
    assert p.preshared_key is None and p.provenance["preshared_key"] is K
    assert "private_key" not in p.provenance  # nobody vouched: unknown


def test_wgrest_v2_addresses_survive_a_conf_rewritten_from_showconf():
    """wgrest v2 rewrites the conf without Address/DNS/hooks: its values win, drift says so."""
    conf = iface(addresses=(), dns=(), post_up=(), mtu=None)
    rest = iface(addresses=("10.0.0.1/24",), dns=("192.0.2.53",), post_up=("iptables -A x",), mtu=1420)
    state = merge("h", "h", [res(C, conf), res(W, rest)], NOW)
    i = state.interfaces["wg0"]
    assert (i.addresses, i.dns, i.mtu) == (("10.0.0.1/24",), ("192.0.2.53",), 1420)
    assert i.post_up == ("iptables -A x",)
    assert i.provenance["addresses"] is W
    assert any(d.field == "addresses" for d in state.drift)
    # a conf that does list them still wins
    conf2 = iface(addresses=("10.9.0.1/24",))
    assert merge("h", "h", [res(C, conf2), res(W, rest)], NOW).interfaces["wg0"].addresses == ("10.9.0.1/24",)
    # nobody has any: known empty
    only = merge("h", "h", [res(C, iface(addresses=()))], NOW).interfaces["wg0"]
    assert only.addresses == () and only.provenance["addresses"] is C


def test_memo_gives_the_same_result_and_reuses_only_unchanged_peers():
    """The memo is an optimisation only: with or without it, merge returns equal states."""
    from wgsyncd.merge import MergeMemo

    a, b, c = key(), key(), key()
    ka, kb = Peer(a, allowed_ips=("10.0.0.1/32",), rx_bytes=1), Peer(b, allowed_ips=("10.0.0.2/32",))
    ca = Peer(a, allowed_ips=("10.0.0.1/32",), name="alice")
    cb = Peer(b, allowed_ips=("10.0.0.9/32",), name="bob")  # drift on allowed IPs
    conf = res(C, iface(peers=[ca, cb, Peer(c, allowed_ips=("10.0.0.3/32",))]))
    memo = MergeMemo()

    def both(results):
        cached, plain = merge("h", "h", results, NOW, memo), merge("h", "h", results, NOW)
        assert cached.interfaces == plain.interfaces and cached.drift == plain.drift
        return cached

    one = both([res(K, iface(peers=[ka, kb])), conf])
    assert len(one.drift) == 2  # b's allowed IPs differ, c is only in the conf
    # a's counters moved (a new kernel object); b unchanged (the same objects)
    ka2 = Peer(a, allowed_ips=("10.0.0.1/32",), rx_bytes=2)
    two = both([res(K, iface(peers=[ka2, kb])), conf])
    assert two.interfaces["wg0"].peers[b] is one.interfaces["wg0"].peers[b]
    assert two.interfaces["wg0"].peers[a] is not one.interfaces["wg0"].peers[a]
    assert two.interfaces["wg0"].peers[a].rx_bytes == 2
    assert two.drift == one.drift  # drift of reused peers is kept, not lost
    # an equal (not identical) copy is reused too; a source going away is not
    kb_copy = Peer(b, allowed_ips=("10.0.0.2/32",))
    three = both([res(K, iface(peers=[ka2, kb_copy])), conf])
    assert three.interfaces["wg0"].peers[b] is one.interfaces["wg0"].peers[b]
    four = both([conf])
    assert four.interfaces["wg0"].peers[b] is not one.interfaces["wg0"].peers[b]
    assert four.drift == []
    assert set(memo.peers) == {("wg0", a), ("wg0", b), ("wg0", c)}


def _res(source, iface):
    from wgsyncd.state import SourceResult

    return SourceResult(source, {iface.name: iface})


def test_merge_reports_a_changed_interface_address_even_in_the_same_subnet() -> None:
    """Address keeps its host bits (it is the interface's own IP): 10.0.0.1/24 != 10.0.0.2/24."""
    from datetime import UTC, datetime

    from wgsyncd.merge import merge
    from wgsyncd.state import DriftKind, Interface, Source

    now = datetime(2026, 11, 25, tzinfo=UTC)
    conf = Interface("wg0", addresses=("10.0.0.1/24", "fd00::1/64"))
    rest = Interface("wg0", addresses=("10.0.0.2/24", "fd00:0::1/64"))
    state = merge("h", "h", [_res(Source.CONF, conf), _res(Source.WGREST, rest)], now)
    (drift,) = [d for d in state.drift if d.field == "addresses"]
    assert drift.kind == DriftKind.DIFFERS
    # same addresses spelled differently and in another order are no drift
    same = Interface("wg0", addresses=("fd00:0:0::1/64", "10.0.0.1/24"))
    state = merge("h", "h", [_res(Source.CONF, conf), _res(Source.WGREST, same)], now)
    assert [d for d in state.drift if d.field == "addresses"] == []


def test_merge_reports_a_preshared_key_present_in_one_source_and_absent_in_another() -> None:
    """No PresharedKey line / no psk in the kernel is a fact ("none"), so psk vs none is drift.

    Without it a psk set or removed at runtime (``wg set ... preshared-key``) never shows.
    """
    from datetime import UTC, datetime

    from wgsyncd.merge import merge
    from wgsyncd.sources.conffiles import parse_conf
    from wgsyncd.sources.kernel import make_peer
    from wgsyncd.state import Interface, Source

    now = datetime(2026, 11, 25, tzinfo=UTC)
    pub = key()
    conf = parse_conf(f"[Interface]\n\n[Peer]\nPublicKey = {pub}\nAllowedIPs = 10.0.0.2/32\n", "/x/wg0.conf")
    for kernel_psk, conf_iface in ((key(), conf), (None, None)):
        kpeer = make_peer(pub, kernel_psk, ("10.0.0.2/32",), None, 0, 0, 0, 0)
        kern = Interface("wg0", peers={pub: kpeer})
        if conf_iface is None:  # the other way round: the conf has a psk the kernel lacks
            text = f"[Interface]\n\n[Peer]\nPublicKey = {pub}\nPresharedKey = {key()}\n"
            conf_iface = parse_conf(text, "/x/wg0.conf")
        state = merge("h", "h", [_res(Source.KERNEL, kern), _res(Source.CONF, conf_iface)], now)
        (drift,) = [d for d in state.drift if d.field == "preshared_key"]
        assert dict(drift.values)["kernel" if kernel_psk is None else "conf"] == "(none)"
    # both without a psk: no drift
    kern = Interface("wg0", peers={pub: make_peer(pub, None, ("10.0.0.2/32",), None, 0, 0, 0, 0)})
    state = merge("h", "h", [_res(Source.KERNEL, kern), _res(Source.CONF, conf)], now)
    assert [d for d in state.drift if d.field == "preshared_key"] == []


def test_memo_reuses_an_unchanged_interface_whole_even_when_peers_come_reordered():
    """An idle interface costs no per-peer work: the same merged Interface comes back."""
    from wgsyncd.merge import MergeMemo

    a, b = key(), key()
    ka, kb = Peer(a, allowed_ips=("10.0.0.1/32",)), Peer(b, allowed_ips=("10.0.0.2/32",))
    conf = res(C, iface(peers=[Peer(a, allowed_ips=("10.0.0.1/32",), name="alice")]))
    memo = MergeMemo()
    one = merge("h", "h", [res(K, iface(peers=[ka, kb])), conf], NOW, memo)
    # new source Interface objects holding the same peers, listed in another order (wireguard-go)
    two = merge("h", "h", [res(K, iface(peers=[kb, ka])), conf], NOW, memo)
    assert two.interfaces["wg0"] is one.interfaces["wg0"] and two.drift == one.drift
    # one peer's counters moved: a new merged Interface, the unchanged peer's object kept
    kb2 = Peer(b, allowed_ips=("10.0.0.2/32",), rx_bytes=9)
    three = merge("h", "h", [res(K, iface(peers=[ka, kb2])), conf], NOW, memo)
    assert three.interfaces["wg0"] is not one.interfaces["wg0"]
    assert three.interfaces["wg0"].peers[a] is one.interfaces["wg0"].peers[a]
    assert three.interfaces["wg0"].peers[b].rx_bytes == 9
    plain = merge("h", "h", [res(K, iface(peers=[ka, kb2])), conf], NOW)
    assert three.interfaces == plain.interfaces and three.drift == plain.drift


def test_a_peer_with_more_allowed_ips_than_the_database_keeps_is_left_out_of_its_interface_only():
    """wg takes any number of prefixes; migration 0007 keeps 100,000 per peer, and one row
    over it failed the host's whole transaction every cycle. Whatever source reported it,
    the peer is left out with an error confined to its interface (whose rows then stay)."""
    from wgsyncd import validate

    big, small = key(), key()
    many = tuple(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}/32" for i in range(validate.MAX_ALLOWED_IPS + 1))
    kernel = iface(
        peers=[Peer(public_key=big, allowed_ips=many), Peer(public_key=small, allowed_ips=("10.9.0.1/32",))]
    )
    state = merge("h", "h", [res(K, kernel), res(C, iface("wg1"))], NOW)
    assert set(state.interfaces["wg0"].peers) == {small} and state.interfaces["wg1"] is not None
    (err,) = state.errors
    assert err.interface == "wg0" and big in err.where and "100,001 allowed IPs" in err.message
    assert state.incomplete("wg0") and not state.incomplete("wg1")
    assert set(kernel.peers) == {big, small}  # the source's object is not changed
