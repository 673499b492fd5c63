"""The between-cycle memo (wgsyncd/memo.py) and the sealing that makes its never-edit rule hold."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from wgsyncd import cycle
from wgsyncd.config import Config
from wgsyncd.memo import Memo
from wgsyncd.merge import MergeMemo
from wgsyncd.state import Interface, Peer, SealedInterface, SealedPeer, Source, SourceResult, seal

PUB = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="


def test_a_new_host_id_empties_the_memo() -> None:
    memo = Memo().for_host("h1")
    memo.conf["/etc/wireguard/wg0.conf"] = (b"x", Interface("wg0"))
    memo.pruned["h1"] = 1.0
    old_merge = memo.merge
    assert memo.for_host("h1") is memo and memo.conf  # same host: kept
    memo.for_host("h2")
    assert memo.host_id == "h2" and memo.conf == {} and memo.pruned == {}
    assert memo.merge is not old_merge and isinstance(memo.merge, MergeMemo)


def test_a_sealed_peer_or_interface_refuses_every_edit() -> None:
    iface = seal(Interface("wg0", listen_port=1, peers={PUB: Peer(PUB, allowed_ips=("10.0.0.2/32",))}))
    peer = iface.peers[PUB]
    assert type(iface) is SealedInterface and type(peer) is SealedPeer
    assert isinstance(iface, Interface) and isinstance(peer, Peer)
    for edit in (
        lambda: setattr(peer, "endpoint", "192.0.2.1:1"),
        lambda: setattr(iface, "listen_port", 2),
        lambda: delattr(peer, "name"),
    ):
        with pytest.raises(dataclasses.FrozenInstanceError, match="sealed"):
            edit()
    assert peer.endpoint is None and iface.listen_port == 1


def test_a_sealed_object_compares_copies_and_pickles_like_the_plain_one() -> None:
    plain = Peer(PUB, allowed_ips=("10.0.0.2/32",), provenance={"allowed_ips": Source.CONF})
    sealed = seal(Interface("wg0", peers={PUB: copy.copy(plain)})).peers[PUB]
    assert sealed == plain and plain == sealed and sealed != Peer(PUB)
    edited = dataclasses.replace(sealed, endpoint="192.0.2.1:1")  # a new object, editable
    assert type(edited) is Peer and edited.endpoint == "192.0.2.1:1" and sealed.endpoint is None
    edited.name = "fine"
    back = pickle.loads(pickle.dumps(sealed))
    assert back == sealed and type(back) is Peer  # the loader seals again (synccache)
    assert copy.deepcopy(sealed) == sealed


def test_what_a_cycle_keeps_between_cycles_is_sealed() -> None:
    """Source results and merged interfaces are sealed before anyone can keep them."""
    peer = Peer(PUB, allowed_ips=("10.0.0.2/32",), provenance={"allowed_ips": Source.CONF})
    result = SourceResult(Source.CONF, interfaces={"wg0": Interface("wg0", peers={PUB: peer})})
    cycle._sealed([result])
    memo = Memo()
    state = cycle.merge_sources(Config(host_id="h1"), [result], result_time(), memo)
    merged = state.interfaces["wg0"]
    assert type(peer) is SealedPeer and type(merged) is SealedInterface
    assert all(type(p) is SealedPeer for p in merged.peers.values())
    assert memo.host_id == "h1" and memo.merge.peers  # the memo holds the sealed objects


def result_time():
    from datetime import UTC, datetime

    return datetime.now(UTC)
