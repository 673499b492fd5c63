"""The value of each conf key, read the way the program it goes to reads it.

``wg`` gets PrivateKey, ListenPort, FwMark and every [Peer] value; ``ip`` gets Address
and MTU; wg-quick itself reads the rest. The C and bash rules themselves live in
wire/confvalues.py; here is which rule each field follows, and the form a value is
kept in: what ``wg show`` and ``ip`` print (AllowedIPs masked, addresses as
inet_ntop prints them), so the conf's values compare equal to the kernel's.

Every parser raises FieldError with a message that never holds the value; the
caller (wire/conftext.py) adds file, line and field.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from typing import TypeVar

from wgsyncd.canonical import CANONICAL_KEY_RE
from wgsyncd.state import StateError, parse_key
from wgsyncd.wire import confvalues as cv
from wgsyncd.wire.conflines import ConfParseError, Line

T = TypeVar("T")

_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")


class FieldError(ValueError):
    """A bad value; the caller adds file, line and field."""


def key(value: str) -> str:
    """A base64 key (StateError, reworded by the caller without the value, if it is not one)."""
    if CANONICAL_KEY_RE.match(value):
        return value  # parse_key's answer, without its decode and re-encode (10,000 peers)
    return parse_key(value, "key")


def uint(value: str, maximum: int, what: str) -> int:
    """A decimal number (leading zeros allowed, as strtoul does) no larger than ``maximum``."""
    if not value.isascii() or not value.isdigit() or int(value) > maximum:
        raise FieldError(f"not {what} (0-{maximum})")
    return int(value)


def fwmark(value: str) -> int:
    """``off``, a decimal number or ``0x`` hex, as ``wg`` accepts (``0X`` is refused by wg too)."""
    if cv.lower(value) == "off":
        return 0
    try:
        if len(value) > 2 and value.startswith("0x"):
            number = int(value[2:], 16)
            if not _HEX_RE.fullmatch(value[2:]):
                raise ValueError
        else:
            number = uint(value, 0xFFFFFFFF, "a number")
    except (ValueError, FieldError):
        raise FieldError("not off, a number or 0x hex (0-0xffffffff)") from None
    if number > 0xFFFFFFFF:
        raise FieldError("not off, a number or 0x hex (0-0xffffffff)")
    return number


def port(value: str) -> int:
    """ListenPort through getaddrinfo, as wg reads it."""
    try:
        return cv.wg_port(value)
    except cv.ValueProblem as exc:
        raise FieldError(str(exc)) from None


def mtu(value: str) -> int:
    """MTU as ``ip link set mtu`` reads it (``0x500``, octal ``01420``)."""
    try:
        return cv.ip_mtu(value)
    except cv.ValueProblem as exc:
        raise FieldError(str(exc)) from None


def keepalive(value: str) -> int:
    """``off`` or seconds 0-65535; ``off`` is 0 as in ``wg show``."""
    if cv.lower(value) == "off":
        return 0
    return uint(value, 65535, "off or seconds")


def allowed_ip(item: str) -> str:
    """One AllowedIPs entry, masked and formatted like ``wg show dump`` prints it.

    Parsed with inet_pton, as ``wg`` does (and 5x faster than ipaddress for big files).
    """
    ip_text, slash, cidr_text = item.partition("/")
    family = socket.AF_INET6 if ":" in ip_text else socket.AF_INET
    try:
        packed = socket.inet_pton(family, ip_text)
    except (OSError, ValueError):
        raise FieldError("not an IP address or network") from None
    bits = len(packed) * 8
    cidr = uint(cidr_text, bits, "a prefix length") if slash else bits
    if cidr != bits:  # a host route (most entries) has no host bits to clear
        number = int.from_bytes(packed, "big") & (((1 << cidr) - 1) << (bits - cidr))
        packed = number.to_bytes(len(packed), "big")
    return f"{socket.inet_ntop(family, packed)}/{cidr}"


def allowed_ips(value: str) -> list[str]:
    """A comma list; wg refuses empty entries (``a,,b`` or a trailing comma)."""
    items = value.split(",")
    if "" in items:
        raise FieldError("empty entry in the comma-separated list")
    return [allowed_ip(i) for i in items]


def _ipv6(host: str) -> str | None:
    """An IPv6 literal (no scope) as inet_ntop prints it, or None when inet_pton refuses it."""
    try:
        return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, host))
    except (OSError, ValueError):
        return None


def endpoint(value: str) -> str:
    """``host:port``, ``[v6]:port`` or unbracketed v6 (wg splits at the last colon).

    The port is read through getaddrinfo as wg does (``https``, ``+51820``, ``70000``);
    an IPv4 host too (``10.1`` is 10.0.0.1). IP literals are normalised to what
    ``wg show`` prints; DNS names are kept as written (the kernel only ever shows the
    address they resolved to) and never looked up here.
    """
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":") or len(rest) < 2:
            raise FieldError("not [address]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host or not port_text:
            raise FieldError("not host:port")
    try:
        number = cv.wg_port(port_text)
    except cv.ValueProblem as exc:
        raise FieldError(f"{exc} after the last ':'") from None
    if ":" not in host:
        v4 = cv.numeric_ipv4(host)
        if v4 is not None:
            return f"{v4}:{number}"
    elif "%" not in host:
        v6 = _ipv6(host)  # ipaddress reads what inet_pton reads here, 10x slower
        if v6 is not None:
            return f"[{v6}]:{number}"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if ":" in host or not _HOSTNAME_RE.match(host):
            raise FieldError("not host:port with an IP address or DNS name") from None
        return f"{host}:{number}"
    if ip.version == 4:
        return f"{socket.inet_ntop(socket.AF_INET, ip.packed)}:{number}"
    scope = f"%{ip.scope_id}" if ip.scope_id else ""
    return f"[{socket.inet_ntop(socket.AF_INET6, ip.packed)}{scope}]:{number}"


def addresses(value: str) -> list[str]:
    """Address entries as wg-quick splits them (commas, IFS) and ``ip address add`` reads them."""
    out = []
    for item in cv.ifs_split(value.replace(",", " ")):
        try:
            out.append(cv.ip_address(item))
        except cv.ValueProblem as exc:
            raise FieldError(str(exc)) from None
    return out


def address_key(address: str) -> str:
    """What the kernel refuses twice: an IPv4 address with its prefix, an IPv6 address with any."""
    return address.split("/")[0] if ":" in address else address


def check_new_address(seen: set[str], address: str) -> None:
    """wg-quick runs ``ip address add`` per entry: a repeat fails it (EEXIST) and wg-quick up stops.

    ``seen`` holds the address_key of every earlier entry (a set: no O(n^2) on long lists).
    """
    if address_key(address) in seen:
        raise FieldError("address given twice (ip refuses the second; wg-quick up fails)")


def boolean(value: str) -> bool:
    """wg-quick's read_bool: true or false, any case, nothing else."""
    if cv.lower(value) in ("true", "false"):
        return cv.lower(value) == "true"
    raise FieldError("must be true or false")


def wgfield(path: str, line: Line, canonical: str, fn: Callable[[str], T]) -> T:
    """Parse one value ``wg`` reads (whitespace dropped, as wg does); errors name file, line, field."""
    value = cv.nospace(line.value)
    if not value:
        raise ConfParseError(path, line.no, canonical, "empty value (wg refuses it)")
    try:
        return fn(value)
    except FieldError as exc:
        raise ConfParseError(path, line.no, canonical, str(exc)) from None
    except StateError:
        raise ConfParseError(path, line.no, canonical, "not a base64 WireGuard key of 32 bytes") from None
