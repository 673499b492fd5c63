"""One spelling per value, defined once: JSON forms, the all-zero key, endpoints and prefixes.

Sources, merge, store, restore and persist compare, hash and sign these values; two
spellings of one value would be drift that is not there, a changed hash, or a
signature that no longer verifies. So each form lives here and everyone imports it.

- JSON: :func:`signed_bytes` is what is hashed and signed (config version documents,
  secrets hashes, signatures): changing it breaks every stored hash and signature.
  :data:`COMPACT` (ASCII, no spaces, ``str()`` for dates and UUIDs) is the row-hash
  and sealed-payload form; :func:`sorted_text` the readable form of local state files
  and ``--json`` output.
- The all-zero key means "no preshared key" to wg and the kernel (base64 and UAPI hex).
- Endpoints and allowed IPs as ``wg show`` prints them (inet_pton/inet_ntop), and the
  sets merge and restore compare them as.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any

ZERO_KEY_B64 = base64.b64encode(bytes(32)).decode()  # "none" in conf files, wg dump, netlink
ZERO_KEY_HEX = "0" * 64  # the same in a UAPI ``set=1`` request (clears a preshared key)
# the canonical spelling of 32 bytes in base64 (no padding bits set): what state.parse_key
# and validate.key accept and return as is, checked without their decode and re-encode
CANONICAL_KEY_RE = re.compile(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=\Z")

# ---------------------------------------------------------------- JSON

COMPACT = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def signed_bytes(obj: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the same value always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed_chunks(obj: Any) -> Iterator[bytes]:
    """:func:`signed_bytes` in pieces: their concatenation is byte for byte the same.

    Why: a 10,000-peer version document is ~3 MiB of text; hashed from pieces, or
    written into one buffer, it never exists as a str, its bytes and a dict per peer
    at once (the first write's memory peak). Dicts are walked here (sorted keys, as
    ``json`` sorts them); a value with a ``canonical_chunks()`` method encodes itself
    (store/versions.py's peer lists); anything else is encoded whole by ``json``.
    """
    if isinstance(obj, dict):
        sep = b"{"
        for key in sorted(obj):
            if not isinstance(key, str):
                raise TypeError(f"canonical JSON keys are strings, not {type(key).__name__}")
            yield sep + signed_bytes(key) + b":"
            sep = b","
            yield from signed_chunks(obj[key])
        yield b"}" if sep == b"," else b"{}"
    elif hasattr(obj, "canonical_chunks"):
        yield from obj.canonical_chunks()
    else:
        yield signed_bytes(obj)


def signed_joined(obj: Any) -> bytes:
    """:func:`signed_bytes` of a value that may hold self-encoding parts (see signed_chunks)."""
    buf = io.BytesIO()
    for chunk in signed_chunks(obj):
        buf.write(chunk)
    return buf.getvalue()


def sorted_text(obj: Any, indent: int | None = None, default: Callable[[Any], Any] | None = None) -> str:
    """Readable JSON with sorted keys (state files, ``--json``): stable diffs, stable output."""
    return json.dumps(obj, sort_keys=True, indent=indent, default=default)


# ---------------------------------------------------------------- endpoints and prefixes


def format_endpoint(addr: str, port: int, scope: str | None = None) -> str:
    """``1.2.3.4:51820`` or ``[fd00::1]:51820``, as ``wg show dump`` prints it.

    ``wg`` uses getnameinfo(NI_NUMERICHOST), i.e. inet_ntop's canonical form; going
    through inet_pton/inet_ntop here makes every backend print the same text.
    """
    if ":" in addr:
        text = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, addr))
        if scope:
            text = f"{text}%{scope}"
        return f"[{text}]:{port}"
    return f"{socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, addr))}:{port}"


def parse_endpoint_text(text: str) -> str:
    """Normalise an ``addr:port`` / ``[addr]:port`` string to wg's spelling, or raise ValueError."""
    if text.startswith("["):
        host, sep, port = text[1:].rpartition("]:")
        if not sep:
            raise ValueError("endpoint without port")
        host, _, scope = host.partition("%")
        return _format_checked(host, parse_port(port), scope or None)
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError("endpoint without port")
    return _format_checked(host, parse_port(port))


def _format_checked(host: str, port: int, scope: str | None = None) -> str:
    """format_endpoint on text from a daemon: inet_pton's OSError becomes the ValueError readers catch."""
    try:
        return format_endpoint(host, port, scope)
    except OSError:
        raise ValueError("endpoint address is not an IP address") from None


def parse_port(text: str) -> int:
    """A UDP port number 0-65535 from text (digits only), or ValueError."""
    if not text.isdigit():
        raise ValueError("port is not a number")
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("port out of range")
    return value


def normalise_prefix(text: str) -> str:
    """``addr/cidr`` as inet_ntop prints it (``wg`` reparses userspace output the same way)."""
    addr, sep, cidr = text.partition("/")
    if not sep:
        raise ValueError("allowed IP without /cidr")
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    if not cidr.isdigit():
        raise ValueError("cidr is not a number")
    bits = int(cidr)
    if not 0 <= bits <= (128 if family == socket.AF_INET6 else 32):
        raise ValueError("cidr out of range")
    try:
        packed = socket.inet_pton(family, addr)
    except OSError:  # inet_pton's error for a bad address is an OSError, not a ValueError
        raise ValueError("allowed IP is not an IP address") from None
    return f"{socket.inet_ntop(family, packed)}/{bits}"


def masked(cidr: str) -> str:
    """An allowed IP with its host bits cleared (10.0.0.5/24 -> 10.0.0.0/24): what the kernel keeps."""
    return str(ipaddress.ip_network(cidr, strict=False))


def network_set(values: Iterable[str] | None) -> frozenset[str]:
    """Allowed IPs / addresses as a set of masked networks: what the kernel keeps.

    Two lists that differ only in order or host bits (10.0.0.5/24 vs 10.0.0.0/24) are
    the same configuration to WireGuard; merge and restore compare through this.
    """
    out = set()
    for v in values or ():
        try:
            out.add(masked(v))
        except ValueError:
            out.add(v)
    return frozenset(out)


def address_set(values: Iterable[str]) -> frozenset[str]:
    """Interface addresses with their host bits: unlike allowed IPs, 10.0.0.1/24 and
    10.0.0.2/24 are different configurations (the interface's own IP changed)."""
    out = set()
    for v in values:
        try:
            out.add(str(ipaddress.ip_interface(v)))
        except ValueError:
            out.add(v)
    return frozenset(out)


def comparable_endpoint(value: str) -> str | None:
    """An endpoint in canonical ip:port form, or None when it is a DNS name (not comparable)."""
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
