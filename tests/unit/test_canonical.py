"""wgsyncd.canonical: each value has one spelling, and the signed form never changes."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgsyncd import canonical


def test_signed_bytes_are_fixed_forever() -> None:
    """Stored document hashes and signatures depend on these exact bytes."""
    doc = {"b": [1, "é"], "a": {"z": None, "y": True}}
    assert canonical.signed_bytes(doc) == '{"a":{"y":true,"z":null},"b":[1,"é"]}'.encode()
    assert hashlib.sha256(canonical.signed_bytes({})).hexdigest() == hashlib.sha256(b"{}").hexdigest()


def test_compact_is_ascii_and_spells_dates_and_uuids_with_str() -> None:
    when, uid = datetime(2026, 1, 2, tzinfo=UTC), uuid.UUID(int=1)
    assert canonical.COMPACT.encode({"t": when, "u": uid, "x": "é"}) == (
        f'{{"t":"{when}","u":"{uid}","x":"\\u00e9"}}'
    )


def test_sorted_text_is_readable_and_stable() -> None:
    assert canonical.sorted_text({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'
    assert canonical.sorted_text({"a": [1]}, indent=1) == '{\n "a": [\n  1\n ]\n}'


def test_zero_keys_are_32_zero_bytes() -> None:
    assert base64.b64decode(canonical.ZERO_KEY_B64) == bytes(32)
    assert bytes.fromhex(canonical.ZERO_KEY_HEX) == bytes(32)


@pytest.mark.parametrize(
    ("text", "spelled"),
    [
        ("192.0.2.1:51820", "192.0.2.1:51820"),
        ("[fd00:0::1]:1", "[fd00::1]:1"),
        ("[fe80::1%eth0]:7", "[fe80::1%eth0]:7"),
    ],
)
def test_endpoints_as_wg_prints_them(text: str, spelled: str) -> None:
    assert canonical.parse_endpoint_text(text) == spelled


@pytest.mark.parametrize("text", ["192.0.2.1", "[fd00::1]", "host.example:1", "192.0.2.1:65536", "1.2.3.4:x"])
def test_bad_endpoints_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError):
        canonical.parse_endpoint_text(text)


def test_prefixes_networks_and_addresses() -> None:
    assert canonical.normalise_prefix("fd00:0:0::1/64") == "fd00::1/64"
    with pytest.raises(ValueError):
        canonical.normalise_prefix("10.0.0.1/33")
    assert canonical.masked("10.0.0.5/24") == "10.0.0.0/24"
    assert canonical.network_set(["10.0.0.5/24", "fd00::/64"]) == {"10.0.0.0/24", "fd00::/64"}
    assert canonical.address_set(["10.0.0.5/24"]) == {"10.0.0.5/24"}  # an address keeps its host bits
    assert canonical.comparable_endpoint("[fd00:0::1]:5") == "[fd00::1]:5"
    assert canonical.comparable_endpoint("vpn.example:5") is None  # a name is not comparable


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@given(_JSON)
def test_signed_chunks_join_to_the_signed_bytes(value) -> None:
    """Hashing or buffering the pieces is hashing the one text: the signature's bytes cannot drift."""
    assert b"".join(canonical.signed_chunks(value)) == canonical.signed_bytes(value)
    assert canonical.signed_joined(value) == canonical.signed_bytes(value)


def test_signed_chunks_take_self_encoding_parts_and_refuse_non_string_keys() -> None:
    class Part:
        def canonical_chunks(self):
            yield b"[1"
            yield b",2]"

    assert canonical.signed_joined({"b": Part(), "a": {}}) == b'{"a":{},"b":[1,2]}'
    with pytest.raises(TypeError, match="keys are strings"):
        canonical.signed_joined({1: "x"})
