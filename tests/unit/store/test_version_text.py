"""A version document encoded peer by peer (store/versions.py PeerList) is the same text and hash
as the whole document of dicts it replaced: stored hashes and signatures must not move."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wgsyncd.canonical import signed_bytes, signed_joined
from wgsyncd.state import HostState, Interface, Peer, Secret, Source, SourceError
from wgsyncd.store import versions

_KEYS = st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode())
_TEXT = st.text(max_size=12)  # quotes, backslashes, control characters, non-ASCII
_PEER = st.tuples(
    _KEYS,
    st.none() | st.lists(_TEXT, max_size=3).map(tuple),
    st.none() | _TEXT,
    st.sampled_from([None, Source.KERNEL, Source.CONF, Source.WGREST]),
    st.none() | st.integers(0, 65535),
    st.none() | _TEXT,
    st.none() | st.lists(_TEXT, max_size=2).map(tuple),
    st.none() | st.booleans(),
    st.booleans(),
)


def _iface(name: str, peers: list[tuple]) -> Interface:
    iface = Interface(name=name, listen_port=51820, addresses=("10.0.0.1/24",), comments=('# é "q"',))
    for pub, ips, endpoint, src, keepalive, pname, comments, disabled, psk in peers:
        peer = Peer(
            public_key=pub,
            allowed_ips=ips,
            endpoint=endpoint,
            persistent_keepalive=keepalive,
            name=pname,
            comments=comments,
            disabled=disabled,
            preshared_key=Secret("k" * 44) if psk else None,
        )
        if src is not None:
            peer.provenance["endpoint"] = src
        iface.peers[pub] = peer
    return iface


def _state(*ifaces: Interface) -> HostState:
    st_ = HostState("h", "h", datetime.now(UTC), {i.name: i for i in ifaces})
    st_.sources = {Source.KERNEL: True, Source.CONF: True}
    return st_


def _plain(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as the old code built it: peers as a list of dicts."""
    ifaces = {n: {**i, "peers": list(i["peers"])} for n, i in doc["interfaces"].items()}
    return {**doc, "interfaces": ifaces}


def _old_sha(doc: dict[str, Any]) -> str:
    """content_sha256 as it was before the peer-by-peer encoding (the reference)."""
    kernel = str(Source.KERNEL)
    ifaces = {}
    for name, iface in doc["interfaces"].items():
        peers = sorted(iface["peers"], key=lambda p: p["public_key"])
        ifaces[name] = {
            **iface,
            "peers": [{**p, "endpoint": None} if p.get("endpoint_source") == kernel else p for p in peers],
        }
    return hashlib.sha256(signed_bytes({**doc, "interfaces": ifaces})).hexdigest()


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_PEER, max_size=8, unique_by=lambda p: p[0]),
    st.lists(_PEER, max_size=3, unique_by=lambda p: p[0]),
)
def test_peer_by_peer_text_and_hash_equal_the_whole_document(peers0, peers1) -> None:
    content = versions.build_content(_state(_iface("wg0", peers0), _iface("wg1", peers1)), None, None)
    plain = _plain(content.doc)
    text = signed_joined(content.doc)
    assert text == signed_bytes(plain)
    assert content.sha256 == _old_sha(plain)
    # what the database hands back (jsonb, parsed) hashes the same: a carried-forward interface
    # and a restore's check see the version the host signed
    back = json.loads(text)
    assert back == plain
    assert versions.content_sha256(back) == content.sha256
    assert len(content.doc["interfaces"]["wg0"]["peers"]) == len(peers0)


def test_carried_forward_interface_mixes_with_fresh_ones() -> None:
    """An interface kept from the stored document (plain dicts) beside one read now (PeerList)."""
    a = _iface(
        "wg0", [("A" * 43 + "=", ("10.0.0.2/32",), "192.0.2.1:1", Source.KERNEL, 0, "a", (), False, True)]
    )
    b = _iface("wg1", [("B" * 43 + "=", None, None, None, None, None, None, None, False)])
    first = versions.build_content(_state(a, b), None, None)
    stored = json.loads(signed_joined(first.doc))
    half = _state(a, Interface(name="wg1", listen_port=1))
    half.errors = [SourceError(Source.CONF, "/etc/wireguard/wg1.conf", "bad line", interface="wg1")]
    again = versions.build_content(half, None, stored)
    assert again.sha256 == first.sha256
    assert signed_joined(again.doc) == signed_joined(first.doc)
