"""One strict validator per field, for every value that can end up in a conf line, hook,
path, UAPI request or netlink message.

Why one module: the same value crosses the agent twice. A source reads it (wgrest's
JSON, a socket file name) and restore writes it back (from a database many hosts
share). A newline in a wgrest ``dns`` entry becomes a new line in a rendered conf, an
interface name with a slash becomes a path; so each field has ONE rule, applied on
the way in (sources) and again on the way out (restore), and the two cannot drift.

Every check raises :class:`Invalid` with the field named and WITHOUT the value (a
value may be a key, and a hostile value must not reach a terminal or a log line).
Callers put their own ``where`` (URL, host/version/interface/peer) in front.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable
from typing import Any

# wg-quick's rule for the name part of <name>.conf; the kernel also refuses "." and ".."
_IFNAME = re.compile(r"[a-zA-Z0-9_=+.-]{1,15}")
# DNS names as wg and wg-quick take them (conffiles uses the same alphabet)
_HOSTNAME = re.compile(r"[A-Za-z0-9_.-]{1,253}")
# an IPv6 zone (scope) id in an endpoint: an interface name or a number, nothing that
# a list splitter or a shell could read as punctuation
_ZONE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
# an ip-route table name (/etc/iproute2/rt_tables), as wg-quick hands it to `ip`
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_DIGITS = re.compile(r"[0-9]{1,10}")
# C0 controls except TAB, DEL, C1 controls, and the Unicode line/paragraph separators:
# everything that ends a line for some reader (Python's splitlines included) or drives
# a terminal. TAB stays allowed: wg-quick trims it like a space.
_CONTROL_CHARS = "\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029"
_CONTROL = re.compile(f"[{_CONTROL_CHARS}]")
# bidi overrides/isolates and zero-width characters: invisible on a terminal, they make a
# hook or a dry-run diff read differently from what runs (Trojan Source)
_INVISIBLE_CHARS = "\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff"
_INVISIBLE = re.compile(f"[{_INVISIBLE_CHARS}]")
# either of the two: one search where a value is only tested; and the same but LF, for
# a whole text whose lines are tested at once (plain_text)
_UNSHOWN = re.compile(f"[{_CONTROL_CHARS}{_INVISIBLE_CHARS}]")
_UNSHOWN_BUT_LF = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029{_INVISIBLE_CHARS}]")
# inside one element of a comma-separated list (AllowedIPs, Address, DNS): a scope id
# (WireGuard takes none there; ipaddress accepts any text after %), a list separator, a blank
_LIST_PUNCT = re.compile(r"[%,\s]")
_B64_KEY = re.compile(r"[A-Za-z0-9+/]{43}=")

U16 = 65535
U32 = 2**32 - 1
MAX_TEXT = 4096  # a hook, comment or name longer than this is not configuration
# What the database keeps (migration 0007's CHECK constraints; tests/unit/test_validate.py
# reads them there): a value past these fails the whole cycle's transaction, every cycle.
MAX_PEER_NAME = 1024  # peers.name
MAX_COMMENT_LINES = 10_000  # peers.comments, interfaces.comments: lines
MAX_COMMENT_CHARS = 1_048_576  # ... and their characters together
MAX_ALLOWED_IPS = 100_000  # peers.allowed_ips
# comment lines of a plain_text file that fit MAX_COMMENT_CHARS however long each is
MAX_PLAIN_LINES = MAX_COMMENT_CHARS // MAX_TEXT


class Invalid(ValueError):
    """A value that fails its field's rule; ``field`` names it, the value is never shown."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def text(value: Any, field: str, *, max_len: int = MAX_TEXT) -> str:
    """A one-line string: no CR, LF, NUL or other control character, bounded length."""
    if not isinstance(value, str):
        raise Invalid(field, f"expected text, got {type(value).__name__}")
    if _CONTROL.search(value):
        raise Invalid(field, "contains a control character (newline, NUL, escape, ...)")
    if _INVISIBLE.search(value):
        raise Invalid(field, "contains a bidi override or zero-width character")
    if len(value) > max_len:
        raise Invalid(field, f"longer than {max_len} characters")
    return value


def interface_name(value: Any, field: str = "name") -> str:
    """wg-quick's interface name rule (``[a-zA-Z0-9_=+.-]{1,15}``), not ``.`` or ``..``.

    The name becomes a file name (``<name>.conf``), a control socket path and a
    /sys/class/net path, so anything else is refused, never cleaned up.
    """
    text(value, field)
    if not _IFNAME.fullmatch(value) or value in (".", ".."):
        raise Invalid(field, "not a valid interface name (wg-quick: [a-zA-Z0-9_=+.-], 1 to 15 characters)")
    return value


def link_name(value: Any, field: str = "name") -> str:
    """A name the kernel takes for a link (dev_valid_name): 1-15 characters, no ``/``,
    ``:`` or whitespace, not ``.`` or ``..``. Looser than wg-quick's rule (``wg@home``
    is a real link), for names a source finds on the host (control socket files)."""
    text(value, field)
    if not 0 < len(value) <= 15 or value in (".", "..") or any(c in value for c in "/: \t"):
        raise Invalid(field, "not a valid network interface name")
    return value


def key(value: Any, field: str) -> str:
    """A WireGuard key exactly as wg prints it: 44 chars of canonical base64, 32 bytes."""
    if not isinstance(value, str) or not _B64_KEY.fullmatch(value):
        raise Invalid(field, "not a base64 WireGuard key (44 characters)")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(field, "not a base64 WireGuard key") from None
    if len(raw) != 32 or base64.b64encode(raw).decode() != value:
        raise Invalid(field, "not a canonical base64 WireGuard key (padding bits set)")
    return value


def integer(value: Any, field: str, low: int, high: int) -> int:
    """A whole number in [low, high] (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(field, f"expected a whole number, got {type(value).__name__}")
    if not low <= value <= high:
        raise Invalid(field, f"out of range {low}..{high}")
    return value


def port(value: Any, field: str = "listen_port") -> int:
    """A UDP port (0 = pick one, as wg reads it)."""
    return integer(value, field, 0, U16)


def keepalive(value: Any, field: str = "persistent_keepalive") -> int:
    """Seconds, 0 = off; WireGuard keeps it in 16 bits."""
    return integer(value, field, 0, U16)


def fwmark(value: Any, field: str = "fwmark") -> int:
    """A 32-bit firewall mark (0 = off)."""
    return integer(value, field, 0, U32)


def mtu(value: Any, field: str = "mtu") -> int:
    """An MTU as `ip link` takes it (wg-quick's MTU line)."""
    return integer(value, field, 1, U16)


def table(value: Any, field: str = "table") -> str:
    """wg-quick's Table: ``off``, ``auto``, a 32-bit number, or a routing table name."""
    text(value, field, max_len=64)
    if _DIGITS.fullmatch(value):
        if int(value) > U32:
            raise Invalid(field, f"table number out of range 0..{U32}")
        return value
    if not _TABLE_NAME.fullmatch(value):
        raise Invalid(field, "not off, auto, a number or a routing table name")
    return value


def cidr(value: Any, field: str) -> str:
    """``address[/prefix]`` (host bits allowed, as wg and ip take them); no spaces, no
    ``%scope`` (``fe80::1%x,0.0.0.0/0`` would be two list entries once rendered)."""
    text(value, field, max_len=64)
    if not value or _LIST_PUNCT.search(value):
        raise Invalid(field, "not an IP address in CIDR notation")
    try:
        ipaddress.ip_interface(value)
    except ValueError:
        raise Invalid(field, "not an IP address in CIDR notation") from None
    return value


def endpoint(value: Any, field: str = "endpoint") -> str:
    """``host:port``, ``1.2.3.4:port`` or ``[v6(%zone)]:port``; host an IP or DNS name."""
    text(value, field, max_len=300)
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        addr, _, zone = host.partition("%")
        try:
            ok = ipaddress.ip_address(addr).version == 6 and (not zone or bool(_ZONE.fullmatch(zone)))
        except ValueError:
            ok = False
        if not sep or not ok:
            raise Invalid(field, "not [IPv6 address]:port")
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not _HOSTNAME.fullmatch(host) or host.startswith("-"):
            raise Invalid(field, "not host:port (an IPv6 address needs [brackets])")
    if not _DIGITS.fullmatch(port_text) or int(port_text) > U16:
        raise Invalid(field, "port is not a number in 0..65535")
    return value


def dns_entry(value: Any, field: str = "dns") -> str:
    """A DNS server address or a search domain, as wg-quick splits them (no spaces, no
    commas, no ``%scope``: ``fe80::1%x,1.2.3.4`` would be two servers once rendered)."""
    text(value, field, max_len=253)
    if _LIST_PUNCT.search(value):
        raise Invalid(field, "not an IP address or a DNS search domain (no scope id, comma or blank)")
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(value) or value.startswith("-"):
        raise Invalid(field, "not an IP address or a DNS search domain")
    return value


def conf_path(value: Any, field: str = "conf_path") -> str:
    """A conf file path whose name is ``<interface name>.conf``."""
    text(value, field)
    name = value.rpartition("/")[2]
    if not name.endswith(".conf"):
        raise Invalid(field, "not a <name>.conf path")
    interface_name(name[: -len(".conf")], field)
    return value


def each(values: Iterable[Any] | None, check: Any, field: str) -> None:
    """Run ``check(value, "field[i]")`` over a list (None = not known: nothing to check)."""
    for i, value in enumerate(values or ()):
        check(value, f"{field}[{i}]")


def _secret_key(secret: Any, field: str) -> None:
    """A Secret holding a key: checked without the value ever reaching the message."""
    if secret:
        key(secret.reveal(), field)


def peer(p: Any) -> None:
    """Every field of a state.Peer that restore renders or sends; raises Invalid naming it."""
    key(p.public_key, "public_key")
    _secret_key(p.preshared_key, "preshared_key")
    _secret_key(p.private_key, "private_key")
    each(p.allowed_ips, cidr, "allowed_ips")
    if p.endpoint is not None:
        endpoint(p.endpoint)
    if p.persistent_keepalive is not None:
        keepalive(p.persistent_keepalive)
    if p.name is not None:
        text(p.name, "name")
    each(p.comments, text, "comments")


def interface(iface: Any) -> None:
    """Every field of a state.Interface except its peers; raises Invalid naming the field."""
    interface_name(iface.name)
    _secret_key(iface.private_key, "private_key")
    if iface.public_key is not None:
        key(iface.public_key, "public_key")
    if iface.listen_port is not None:
        port(iface.listen_port)
    if iface.fwmark is not None:
        fwmark(iface.fwmark)
    each(iface.addresses, cidr, "addresses")
    each(iface.dns, dns_entry, "dns")
    if iface.mtu is not None:
        mtu(iface.mtu)
    if iface.table is not None:
        table(iface.table)
    for hook in ("pre_up", "post_up", "pre_down", "post_down"):
        each(getattr(iface, hook), text, hook)
    each(iface.comments, text, "comments")
    if iface.conf_path is not None:
        conf_path(iface.conf_path)
    if iface.conf_text is not None and "\x00" in iface.conf_text.reveal():
        raise Invalid("conf_text", "contains a NUL byte")
    if iface.implementation not in (None, "kernel", "userspace"):
        raise Invalid("implementation", "not kernel or userspace")


def whole_interface(iface: Any, where: str) -> None:
    """An interface and all its peers; the first bad value raises Invalid whose text is
    ``<where>: [peer <key>: ]<field>: <why>`` (a peer is named by its public key only
    once that key itself passed)."""
    try:
        interface(iface)
    except Invalid as exc:
        raise Invalid(f"{where}: {exc.field}", exc.message) from None
    for pub, p in iface.peers.items():
        label = f"peer {pub}" if isinstance(pub, str) and _B64_KEY.fullmatch(pub) else "a peer"
        try:
            if pub != p.public_key:
                raise Invalid("public_key", "does not match the key the peer is listed under")
            peer(p)
        except Invalid as exc:
            raise Invalid(f"{where}: {label}: {exc.field}", exc.message) from None


def _escaped(match: re.Match[str]) -> str:
    """One character as its Python escape (``\\x1b``, ``\\u202e``)."""
    return match.group().encode("unicode_escape").decode("ascii")


def shown(value: str, max_len: int | None = 80) -> str:
    """A value safe to put on a terminal or in a log line: control characters, bidi
    overrides and zero-width characters escaped (``\\x1b``, ``\\n``, ``\\u202e``), cut
    to ``max_len``. For names that failed (or have not yet passed) their check; never
    for secrets."""
    out = _INVISIBLE.sub(_escaped, _CONTROL.sub(_escaped, value))
    return out if max_len is None or len(out) <= max_len else out[:max_len] + "..."


def display_line(value: str, max_len: int = MAX_TEXT) -> str:
    """A comment or name as stored for people to read: control, bidi and zero-width
    characters escaped (:func:`shown`), cut to ``max_len`` with ``...``. The conf file's
    own text travels whole in conf_text; this copy must pass :func:`text`, which restore
    applies to every value it loads, and the database's bounds."""
    if len(value) <= max_len and not _UNSHOWN.search(value):
        return value
    out = shown(value, None)
    return out if len(out) <= max_len else out[: max_len - 3] + "..."


def without_unshown(value: str) -> str | None:
    """``value`` without the characters :func:`display_line` escapes, or None when it has
    none (most values): a key split by a zero-width space is still a key to redact."""
    return _UNSHOWN.sub("", value) if _UNSHOWN.search(value) else None


def display_lines(lines: Iterable[str]) -> tuple[tuple[str, ...], int]:
    """Comment lines as stored (each through :func:`display_line`), the leading ones that
    fit the database's bounds per peer or interface; and how many were left out."""
    kept: list[str] = []
    chars = 0
    left_out = 0
    for line in lines:
        shown_line = display_line(line)
        if left_out or len(kept) == MAX_COMMENT_LINES or chars + len(shown_line) > MAX_COMMENT_CHARS:
            left_out += 1
            continue
        kept.append(shown_line)
        chars += len(shown_line)
    return tuple(kept), left_out


def plain_text(text: str) -> bool:
    """True when no line of ``text`` is one :func:`display_line` would change: the
    conf reader then keeps up to MAX_PLAIN_LINES comment lines per block as they are,
    without a test per line (two scans of a 10,000-peer file: ~7 ms; per line: ~20)."""
    return not _UNSHOWN_BUT_LF.search(text) and max(map(len, text.split("\n")), default=0) <= MAX_TEXT
