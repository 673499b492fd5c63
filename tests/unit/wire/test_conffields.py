"""wire/conffields.py: the fast readings equal the general ones they stand in for."""

from __future__ import annotations

import base64
import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgsyncd.state import StateError, parse_key
from wgsyncd.wire import conffields as cf


def ipaddress_reading(host: str) -> str | None:
    """An IPv6 endpoint host as the general path reads it (the ipaddress module)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version != 6:
        return None
    scope = f"%{ip.scope_id}" if ip.scope_id else ""
    return f"{socket.inet_ntop(socket.AF_INET6, ip.packed)}{scope}"


GROUPS = st.sampled_from(
    ["", "0", "1", "db8", "2001", "ffff", "FFFF", "0000", "00000", "g", "1.2.3.4", "01.2.3.4"]
)


@settings(max_examples=1500, deadline=None)
@given(groups=st.lists(GROUPS, min_size=2, max_size=10), scope=st.sampled_from(["", "%eth0", "%1"]))
def test_ipv6_endpoint_equals_the_ipaddress_reading(groups: list[str], scope: str) -> None:
    host = ":".join(groups) + scope
    expected = ipaddress_reading(host)
    if expected is None:
        with pytest.raises(cf.FieldError):
            cf.endpoint(f"[{host}]:51820")
    else:
        assert cf.endpoint(f"[{host}]:51820") == f"[{expected}]:51820"


@settings(max_examples=1500, deadline=None)
@given(
    raw=st.binary(min_size=30, max_size=34), tweak=st.sampled_from(["", "pad", "space", "nbsp", "urlsafe"])
)
def test_key_equals_parse_key(raw: bytes, tweak: str) -> None:
    text = base64.b64encode(raw).decode()
    if tweak == "pad" and text.endswith("=") and not text.endswith("=="):
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        text = text[:-2] + alphabet[alphabet.index(text[-2]) | 1] + "="
    text = {"space": " " + text, "nbsp": "\u00a0" + text, "urlsafe": text.replace("+", "-")}.get(tweak, text)
    try:
        expected: str | None = parse_key(text, "key")
    except StateError:
        expected = None
    if expected is None:
        with pytest.raises(StateError):
            cf.key(text)
    else:
        assert cf.key(text) == expected


@pytest.mark.parametrize(
    ("item", "shown"),
    [
        ("10.0.0.5/24", "10.0.0.0/24"),
        ("10.0.0.5/32", "10.0.0.5/32"),
        ("10.0.0.5", "10.0.0.5/32"),
        ("fd00::1:2/64", "fd00::/64"),
        ("fd00:0::1", "fd00::1/128"),
        ("0.0.0.0/0", "0.0.0.0/0"),
    ],
)
def test_allowed_ip_is_masked_as_the_kernel_prints_it(item: str, shown: str) -> None:
    assert cf.allowed_ip(item) == shown
