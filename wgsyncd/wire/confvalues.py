"""Values of a wg-quick conf file read the way the programs that get them read them.

A conf file is run by three programs, each with its own C or bash number and address
rules, and a backup must read a value the way the program that uses it does:

- ``wg`` (C, no setlocale): whitespace is ASCII ``isspace`` (`` \\t\\n\\v\\f\\r``), keys
  match with ``strncasecmp`` (ASCII case folding only: the Kelvin sign is not ``k``);
  ListenPort and an Endpoint's port go through ``getaddrinfo`` (``+51820``, ``https``,
  ``70000`` which is 4464, ``010`` which is 10); an Endpoint's IPv4 host too
  (``10.1`` is 10.0.0.1, ``010.0.0.1`` is 8.0.0.1); AllowedIPs through ``inet_pton``;
  an all-zero private or preshared key means "none"; a private key is clamped.
- ``ip`` (iproute2) gets MTU (``strtol`` base 0: ``0x500`` is 1280, ``01420`` octal 784)
  and Address (each IPv4 part ``strtoul`` base 0, one to four parts, the prefix
  base 0 or a contiguous dotted netmask).
- bash (wg-quick) trims with ``[[:space:]]`` and splits lists on IFS (space, tab, LF).

Python's own ``str.split``/``strip``/``lower``/``int`` are Unicode-aware or stricter
and would read these files differently, so none of them is used on a value here.
Pure functions, no I/O (``getaddrinfo`` is asked only for numeric or /etc/services
answers: never a DNS lookup).
"""

from __future__ import annotations

import base64
import functools
import re
import socket

from wgsyncd.canonical import ZERO_KEY_B64

ASCII_SPACE = " \t\n\v\f\r"  # C isspace() in the C locale; bash [[:space:]] for ASCII
IFS = " \t\n"  # bash word splitting and `read` trimming
ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_SPACE_RE = re.compile(r"[ \t\n\v\f\r]+")
_IFS_RE = re.compile(r"[ \t\n]+")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}\Z")


class ValueProblem(ValueError):
    """A value the program that reads it refuses; the message never holds the value."""


def lower(text: str) -> str:
    """ASCII-only lower case, as ``strcasecmp`` folds (``str.lower`` maps the Kelvin sign to k)."""
    return text.lower() if text.isascii() else text.translate(ASCII_LOWER)  # translate: 1 us a key


def strip(text: str) -> str:
    """Trim C/bash whitespace only: a no-break space is text to wg and to bash."""
    return text.strip(ASCII_SPACE)


def nospace(text: str) -> str:
    """``wg`` drops every ``isspace`` character of a line before parsing it."""
    if " " not in text and text.isprintable():  # no \t\n\v\f\r either: they are not printable
        return text
    return _SPACE_RE.sub("", text)


def ifs_split(text: str) -> list[str]:
    """bash word splitting with the default IFS (wg-quick's unquoted ``${value//,/ }``)."""
    return [w for w in _IFS_RE.split(text) if w]


def strtoul_prefix(text: str, base: int) -> tuple[int, str] | None:
    """C ``strtoul``/``strtol`` on ``text``: (value, unparsed rest), or None when no digit.

    Leading whitespace and one sign are allowed as in C; base 0 reads ``0x`` hex,
    a leading ``0`` as octal, else decimal. A minus sign negates (the caller decides
    what that means for unsigned). ``0x`` without hex digits parses as 0, rest ``x...``.
    """
    s = text.lstrip(ASCII_SPACE)
    sign = 1
    if s[:1] in ("+", "-"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if base == 0:
        if s[:2] in ("0x", "0X") and s[2:3] and s[2] in "0123456789abcdefABCDEF":
            base, s = 16, s[2:]
        elif s[:1] == "0":
            base = 8
        else:
            base = 10
    digits = "0123456789abcdef"[:base]
    n = 0
    while n < len(s) and s[n].lower() in digits and s[n].isascii():
        n += 1
    if n == 0:
        return None
    return sign * int(s[:n], base), s[n:]


def c_number(text: str, base: int) -> int | None:
    """The whole of ``text`` as ``strtol`` reads it (nothing left over), or None."""
    parsed = strtoul_prefix(text, base)
    if parsed is None or parsed[1]:
        return None
    return parsed[0]


def ip_mtu(value: str) -> int:
    """MTU as ``ip link set mtu`` reads it: ``strtol`` base 0 over the whole value.

    The kernel then refuses what is out of the device's range; a negative or larger
    than 65535 value is refused here (no WireGuard device takes it).
    """
    number = c_number(value, 0)
    if number is None or not 0 <= number <= 65535:
        raise ValueProblem("not an MTU as ip reads it (a number 0-65535, 0x hex or 0 octal)")
    return number


def _c_unsigned(text: str, base: int) -> tuple[int, str] | None:
    """``strtoul``: like strtoul_prefix, but a negated number wraps around (so it is huge)."""
    parsed = strtoul_prefix(text, base)
    if parsed is None:
        return None
    value, rest = parsed
    return (value if value >= 0 else (1 << 64) + value), rest


def _ip_v4(text: str) -> bytes | None:
    """iproute2's get_addr_ipv4: one to four parts, each ``strtoul`` base 0 and <= 255."""
    out = bytearray(4)
    rest = text
    for i in range(4):
        parsed = _c_unsigned(rest, 0)
        if parsed is None or parsed[0] > 255:
            return None
        out[i], rest = parsed
        if not rest:
            return bytes(out)
        if i == 3 or rest[0] != ".":
            return None
        rest = rest[1:]
    return None


def _netmask_bits(text: str, bits: int) -> int | None:
    """A prefix length as ip reads it: ``strtoul`` base 0, or (IPv4) a contiguous dotted mask."""
    parsed = _c_unsigned(text, 0)
    if parsed is not None and not parsed[1]:
        return parsed[0] if parsed[0] <= bits else None
    if bits != 32:
        return None
    mask = _ip_v4(text)
    if mask is None:
        return None
    value = int.from_bytes(mask, "big")
    ones = bin(value).count("1")
    return ones if value == (0xFFFFFFFF << (32 - ones)) & 0xFFFFFFFF else None


def ip_address(item: str) -> str:
    """One Address entry as ``ip address add`` reads it, printed the way ``ip`` prints it.

    Host bits are kept (it is the interface's own address); no prefix means the host's.
    """
    addr, slash, prefix = item.partition("/")
    if ":" in addr:
        try:
            packed = socket.inet_pton(socket.AF_INET6, addr)
        except (OSError, ValueError):
            raise ValueProblem("not an IP address with optional /prefix (as ip reads it)") from None
        family, bits = socket.AF_INET6, 128
    else:
        v4 = _ip_v4(addr) if addr else None
        if v4 is None:
            raise ValueProblem("not an IP address with optional /prefix (as ip reads it)")
        packed, family, bits = v4, socket.AF_INET, 32
    length = _netmask_bits(prefix, bits) if slash else bits
    if length is None:
        raise ValueProblem("not an IP address with optional /prefix (as ip reads it)")
    return f"{socket.inet_ntop(family, packed)}/{length}"


@functools.lru_cache(maxsize=256)
def _service_port(value: str) -> int | None:
    """The port getaddrinfo gives for a service string (number, ``+n``, /etc/services name)."""
    try:
        infos = socket.getaddrinfo(
            None, value, socket.AF_UNSPEC, socket.SOCK_DGRAM, socket.IPPROTO_UDP, socket.AI_PASSIVE
        )
    except (OSError, UnicodeError, ValueError):
        return None
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            return int(sockaddr[1])
    return None


def wg_port(value: str) -> int:
    """A port as ``wg`` reads it through ``getaddrinfo``: ``70000`` is 4464, ``https`` 443.

    Only numbers and names in /etc/services resolve (no NSS network lookup is
    involved for a service with no host); what getaddrinfo refuses, wg refuses.
    """
    if value.isdigit() and value.isascii() and len(value) <= 5 and int(value) <= 65535:
        return int(value)  # what getaddrinfo answers for these, without its ~40 us per call
    if not value or "\0" in value:
        raise ValueProblem("not a port as wg reads it (a number or a service name)")
    port = _service_port(value)
    if port is None:
        raise ValueProblem("not a port as wg reads it (a number or a service name)")
    return port


@functools.lru_cache(maxsize=1024)
def numeric_ipv4(host: str) -> str | None:
    """An IPv4 host as getaddrinfo reads a numeric one (inet_aton: ``10.1``, ``0xc0.0.2.1``)."""
    if _DOTTED_QUAD_RE.match(host):
        return host  # canonical already: inet_aton reads it as written, and it prints the same
    if not host or not host.isascii() or "\0" in host:
        return None
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return None
    return str(infos[0][4][0]) if infos else None


def wg_key_or_none(key: str) -> str | None:
    """An all-zero private or preshared key is "none" to wg and the kernel."""
    return None if key == ZERO_KEY_B64 else key


def clamped(private_key: str) -> str:
    """A private key as the kernel and wireguard-go keep it (and ``wg show`` prints it): clamped."""
    raw = bytearray(base64.b64decode(private_key))
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    return base64.b64encode(bytes(raw)).decode()
