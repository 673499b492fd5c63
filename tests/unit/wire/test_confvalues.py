"""wire/confvalues.py: the short ways give exactly what the long ways (libc, regex) give."""

from __future__ import annotations

import re
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgsyncd.wire import confvalues as cv


def getaddrinfo_port(value: str) -> int | None:
    """What wg gets for a port: the libc answer itself."""
    try:
        infos = socket.getaddrinfo(None, value, socket.AF_UNSPEC, socket.SOCK_DGRAM, 0, socket.AI_PASSIVE)
    except (OSError, UnicodeError, ValueError):
        return None
    return int(infos[0][4][1])


@pytest.mark.parametrize("number", [*range(0, 100000, 997), 1, 9, 10, 99, 65534, 65535, 65536, 70000, 99999])
def test_decimal_port_equals_getaddrinfo(number: int) -> None:
    for text in {str(number), str(number).zfill(5), "0" + str(number)}:
        expected = getaddrinfo_port(text)
        if expected is None:
            with pytest.raises(cv.ValueProblem):
                cv.wg_port(text)
        else:
            assert cv.wg_port(text) == expected, text


def inet_aton(host: str) -> str | None:
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return None
    return str(infos[0][4][0])


PARTS = st.sampled_from(
    ["0", "1", "9", "10", "99", "100", "199", "249", "250", "255", "256", "00", "01", "0x1", ""]
)


@settings(max_examples=800, deadline=None)
@given(parts=st.lists(PARTS, min_size=1, max_size=5), tail=st.sampled_from(["", "\n", " ", "x", "."]))
def test_numeric_ipv4_equals_inet_aton(parts: list[str], tail: str) -> None:
    host = ".".join(parts) + tail
    assert cv.numeric_ipv4.__wrapped__(host) == inet_aton(host) or (not host.isascii())


@settings(max_examples=800, deadline=None)
@given(text=st.text(alphabet=" \t\n\v\f\r\x1c\u00a0\u2028aZ/:.,=", max_size=12))
def test_nospace_drops_exactly_c_whitespace(text: str) -> None:
    assert cv.nospace(text) == re.sub(r"[ \t\n\v\f\r]", "", text)


@settings(max_examples=800, deadline=None)
@given(text=st.text(alphabet="aZkK\u212a\u0130iI[]=", max_size=10))
def test_lower_folds_ascii_only(text: str) -> None:
    expected = "".join(c.lower() if "A" <= c <= "Z" else c for c in text)
    assert cv.lower(text) == expected
