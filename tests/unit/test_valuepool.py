"""valuepool: while the sources read, equal values are one object; outside a read, nothing is kept."""

from __future__ import annotations

import base64
import os
import threading

from wgsyncd import valuepool
from wgsyncd.sources.conffiles import parse_conf
from wgsyncd.sources.kernel import make_peer


def _fresh(text: str) -> str:
    """An equal str that is not the same object (as a second source would read it)."""
    return "".join(list(text))


def test_equal_values_are_one_object_only_inside_a_pool() -> None:
    a, b = "10.0.0.1/32", _fresh("10.0.0.1/32")
    assert a == b and a is not b
    assert valuepool.one(b) is b  # no pool open: the value itself
    with valuepool.pooled():
        assert valuepool.one(a) is a and valuepool.one(b) is a
        assert valuepool.one_tuple([b]) is valuepool.one_tuple((_fresh(a),))
        assert valuepool.one_tuple([b])[0] is a
        assert valuepool.one_secret(b) is valuepool.one_secret(a)
        assert valuepool.one_secret(b).reveal() == a
    assert valuepool._values is None  # the pool goes with the read
    assert valuepool.one_secret(a) is not valuepool.one_secret(a)


def test_overlapping_pools_share_until_the_last_one_closes() -> None:
    """The daemon's read and another caller's may overlap (threads): the pool stays until both end."""
    inner_ready, outer_done = threading.Event(), threading.Event()
    seen = []

    def other() -> None:
        with valuepool.pooled():
            inner_ready.set()
            outer_done.wait(5)
            seen.append(valuepool.one(_fresh("x" * 20)))

    with valuepool.pooled():
        first = valuepool.one("x" * 20)
        thread = threading.Thread(target=other)
        thread.start()
        assert inner_ready.wait(5)
    outer_done.set()
    thread.join(5)
    assert seen and seen[0] is first
    assert valuepool._values is None


def test_the_conf_and_kernel_copies_of_a_peer_share_their_strings() -> None:
    """The memo keeps every source's copy: inside a read they hold one key, one prefix tuple, one psk."""
    pub, psk = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    text = (
        f"[Interface]\n\n[Peer]\nPublicKey = {pub}\nPresharedKey = {psk}\n"
        "AllowedIPs = 10.0.0.2/32\nEndpoint = 192.0.2.1:51820\n"
    )
    with valuepool.pooled():
        conf = parse_conf(text, "/x/wg0.conf").peers[pub]
        kern = make_peer(
            _fresh(pub), _fresh(psk), (_fresh("10.0.0.2/32"),), _fresh("192.0.2.1:51820"), 0, 0, 0, 0
        )
    assert kern.public_key is conf.public_key and kern.allowed_ips is conf.allowed_ips
    assert kern.endpoint is conf.endpoint and kern.preshared_key is conf.preshared_key
    # without a pool each source keeps its own
    alone = make_peer(_fresh(pub), None, (_fresh("10.0.0.2/32"),), None, 0, 0, 0, 0)
    assert alone.public_key == pub and alone.public_key is not conf.public_key
