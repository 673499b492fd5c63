"""Row values and their hash: the fast paths give exactly what the general ones give."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest

from wgsyncd.state import Source
from wgsyncd.store import values

ROWS: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = [
    (("wg0", "k" * 44), ("name", ["# c"], ["10.0.0.1/32"], None, 0, False, True, "ab", None, None)),
    (("wg0",), (None, [], {}, {"b": 1, "a": [None, True]}, -(2**63), 2**64)),
    (("ü", 'q"uote\\'), ("ünïcode ✓", ["\t\n", ""], {"z": "\u2028", "a": "x"}, 1.5)),
    (("wg1", "k"), (datetime(2030, 1, 1, tzinfo=UTC), ("tuple", "as", "list"))),
]


@pytest.mark.parametrize(("key", "vals"), ROWS)
def test_row_hash_is_the_compact_encoders_hash(key: tuple[Any, ...], vals: tuple[Any, ...]) -> None:
    """The prebuilt C encoder must spell a row byte for byte as canonical.COMPACT does:
    every stored row_hash was made that way."""
    want = hashlib.sha256(values.HASH_ENCODER.encode([list(key), list(vals)]).encode()).hexdigest()
    assert values.row_hash(key, vals) == want
    assert values.row_hash(list(key), list(vals)) == want


def test_provenance_keys_on_content_not_on_a_lossy_join() -> None:
    """Two maps whose joined source names would read alike stay apart."""
    a = values._provenance({"f": "x\ny", "g": "z"})
    b = values._provenance({"f": "x", "g": "y\nz"})
    assert a == {"f": "x\ny", "g": "z"}
    assert b == {"f": "x", "g": "y\nz"}
    kernel = values._provenance({"name": Source.KERNEL, "endpoint": Source.CONF})
    assert kernel == {"endpoint": "conf", "name": "kernel"}
    assert all(type(v) is str for v in kernel.values())
    assert values._provenance({"endpoint": Source.CONF, "name": Source.KERNEL}) is not None


def test_sources_sorted_and_shared() -> None:
    one = values._sources((Source.KERNEL, Source.CONF))
    assert one == ["conf", "kernel"]
    assert values._sources((Source.KERNEL, Source.CONF)) is one
    assert values._sources(()) == []


def test_peer_values_follow_the_column_order() -> None:
    """Each value lands in its PEER_FIELDS column (peer_values builds the tuple by position)."""
    from wgsyncd.state import Peer, Secret
    from wgsyncd.store.rows import PEER_FIELDS

    psk = Secret("A" * 43 + "=")
    peer = Peer(
        public_key="k" * 43 + "=",
        preshared_key=psk,
        allowed_ips=("10.0.0.2/32",),
        endpoint="192.0.2.1:51820",
        persistent_keepalive=25,
        name="alice",
        comments=("# Name = alice",),
        disabled=False,
        provenance={"endpoint": Source.KERNEL, "name": Source.CONF, "preshared_key": Source.KERNEL},
        seen_by=(Source.KERNEL, Source.CONF),
    )
    got = dict(zip(PEER_FIELDS, values.peer_values(peer), strict=True))
    assert got == {
        "name": "alice",
        "comments": ("# Name = alice",),
        "allowed_ips": ("10.0.0.2/32",),
        "endpoint": "192.0.2.1:51820",
        "persistent_keepalive": 25,
        "disabled": False,
        "has_preshared_key": True,
        "preshared_key_fp": psk.fingerprint(),
        "has_private_key": None,
        "private_key_fp": None,
        "sources": ["conf", "kernel"],
        "provenance": {"endpoint": "kernel", "name": "conf", "preshared_key": "kernel"},
    }
