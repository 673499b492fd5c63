"""The conf-file source: /etc/wireguard/*.conf read the way wg-quick and wg read them.

wg-quick (bash ``parse_options``) and ``wg setconf`` (C) are what a host really runs,
so their rules are the rules here, not those of any Python library:

- a comment starts at the first ``#`` anywhere in a line, hooks included;
- ``key = value`` splits at the first ``=``; keys and section headers are
  case-insensitive; the last line may lack its newline;
- ``wg`` removes every whitespace character from the lines it gets, so
  ``Allowed IPs = 10.0.0.2 / 32`` is valid; empty values are an error for ``wg``;
- AllowedIPs come back from the kernel masked and printed by glibc's inet_ntop,
  so they are stored the same way (``10.0.0.5/24`` -> ``10.0.0.0/24``); Address
  keeps its host bits (it is the interface's own address).
- What wg-quick runs is read, the way wg, ip and bash read it (confvalues.py): ports
  through getaddrinfo, MTU and Address as ``ip`` parses them, ASCII-only whitespace
  and case, Latin-1 bytes; repeated [Peer] keys merge as ``wg setconf`` applies them,
  a prefix stays with its last peer, the interface's own key is no peer, zero keys
  are none, a private key is clamped. Suspicious files get a warning naming the
  line; ``#! `` disabled blocks are never an error. A file a tool refuses is an
  error (and its raw text is still sealed, see SourceResult.unparsed).
- A file rewritten while it is read is read again (_read_bytes), never half.

wgconfig (the library wgrest v1 uses to edit these files) is run on every file as a
structural cross-check: its peer set and disabled flags are compared with ours, and a
file it cannot parse (``[ Peer ]``, ``#! [Foo]``) gets a warning, not an error, because
wg-quick runs it fine and a backup must not skip a working interface. Its values are
not used: it splits every value on commas, cuts hooks at ``#``, is case-sensitive on
keys, collapses duplicate public keys, treats ``#! `` anywhere in a line as nothing,
and gives lines after a blank line inside a section to the next section. Disabled
peers (wgconfig's ``#! `` prefixed blocks) are found here with wg-quick's reading.

Sources only read: nothing here writes a file.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import ipaddress
import logging
import os
import re
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import wgconfig

from wgsyncd.config import ConfConfig
from wgsyncd.sources import confvalues as cv
from wgsyncd.state import (
    CONF_NAME_RE,
    Interface,
    Peer,
    Secret,
    Source,
    SourceError,
    SourceResult,
    StateError,
    parse_key,
    public_key_from_private,
    shared,
)

log = logging.getLogger(__name__)

# a conf with 10,000 peers is about 1.5 MB; anything far larger is not a conf file
MAX_CONF_BYTES = 64 * 1024 * 1024

# [Interface] keys wg-quick consumes itself (matched on the trimmed key, as bash does)
_WGQUICK_KEYS = {
    k.lower(): k
    for k in (
        "Address",
        "DNS",
        "MTU",
        "Table",
        "PreUp",
        "PostUp",
        "PreDown",
        "PostDown",
        "SaveConfig",
    )
}
# keys passed to `wg`, which drops all whitespace first: "Listen Port" is ListenPort to wg
_WG_INTERFACE_KEYS = {k.lower(): k for k in ("PrivateKey", "ListenPort", "FwMark")}
_PEER_KEYS = {
    k.lower(): k for k in ("PublicKey", "PresharedKey", "AllowedIPs", "Endpoint", "PersistentKeepalive")
}
_HOOKS = {"preup": "pre_up", "postup": "post_up", "predown": "pre_down", "postdown": "post_down"}
_SAFE_WORD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_ -]{0,23}$")
_SAFE_HEADER_RE = re.compile(r"^\[[A-Za-z0-9_ -]{0,20}\]$")
_SECRET_IN_COMMENT_RE = re.compile(r"(?i)((?:private|pre\s*shared)\s*key\s*[=:]\s*)\S+")
_BARE_KEY_RE = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=(?![A-Za-z0-9+/=])")
_NAME_KEY_RE = re.compile(r"(?i)^#+\s*name\s*[=:]\s*(.*?)\s*$")
_SETTING_RE = re.compile(r"^[A-Za-z][A-Za-z ]*=|<redacted>")  # "PrivateKey = ..." commented out: not a name
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


class ConfParseError(ValueError):
    """A conf file that wg-quick/wg would refuse; names file, line and field, never a value."""

    def __init__(self, path: str, lineno: int | None, field_name: str, message: str) -> None:
        self.path = path
        self.lineno = lineno
        self.field_name = field_name
        self.message = message
        super().__init__(f"{self.where}: {message}")

    @property
    def where(self) -> str:
        """``<path>:<line> <Field>``, or ``<path>`` for a problem with the whole file."""
        if self.lineno is None:
            return self.path
        return f"{self.path}:{self.lineno} {self.field_name}"


@dataclass(slots=True)
class _Line:
    """One classified line; ``disabled`` when it came from a ``#! `` line."""

    no: int  # 1-based
    kind: str  # blank | comment | header | kv | noeq
    disabled: bool = False
    key: str = ""  # lowercased key, or the lowercased header without whitespace (as wg sees it)
    raw_key: str = ""
    value: str = ""
    comment: str = ""  # full comment line, or the inline comment of a kv/header line
    wgquick: bool = True  # header: wg-quick sees it as [Interface] (exact, no inner spaces)


@dataclass(slots=True)
class _Block:
    """One [Interface] or [Peer] section (or a disabled ``#! [Peer]`` block)."""

    kind: str  # interface | peer
    header_no: int
    disabled: bool = False
    kvs: list[_Line] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    above: list[str] = field(default_factory=list)  # the comment run directly above the header
    wgquick: bool = True  # wg-quick consumes its Address/DNS/... (header written exactly)


def _safe_word(text: str, fallback: str) -> str:
    """A key or header as written, if it cannot be (part of) a key; else a placeholder.

    A pasted key line ``kP3...w=`` splits into a "key" that is a private key minus
    its padding, so only short word-like names are ever echoed in an error.
    """
    return text if _SAFE_WORD_RE.match(text) else fallback


def _redact_comment(text: str) -> str:
    """Hide commented-out key material: comments are stored in clear, conf_text is not.

    A value labelled PrivateKey/PresharedKey is always hidden; a bare 32-byte base64
    key is hidden unless the comment says it is a public key (the raw text keeps both).
    """
    text = _SECRET_IN_COMMENT_RE.sub(r"\1<redacted>", text)
    if "public" not in text.lower():
        text = _BARE_KEY_RE.sub("<redacted>", text)
    return text


_nospace = cv.nospace  # ``wg`` drops every ASCII whitespace character of a line


def _warn(path: str, lineno: int | None, field_name: str, message: str) -> None:
    """A file wg-quick runs but a human should look at: one line naming file, line, field."""
    where = path if lineno is None else f"{path}:{lineno} {field_name}"
    log.warning("%s: %s", where, message)


def _split_lines(text: str) -> list[str]:
    """Lines as bash ``read -r`` sees them: split on LF only, last line may lack one."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _classify_plain(no: int, s: str) -> _Line:
    """Classify an already stripped line with wg-quick's rules (comment at first ``#``).

    Whitespace and case are ASCII only, as bash's ``[[:space:]]``/nocasematch and wg's
    ``isspace``/``strcasecmp`` treat these keys: a no-break space is not trimmed and the
    Kelvin sign is not ``k``. A line without ``=`` keeps its text as key and value:
    wg-quick's ``${stripped#*=}`` is then the whole line (a bare ``DNS`` line is DNS "DNS").
    """
    if not s:
        return _Line(no, "blank")
    code, hash_, rest = s.partition("#")
    code = cv.strip(code)
    if not code:
        return _Line(no, "comment", comment=s)
    inline = hash_ + rest
    key, eq, value = code.partition("=")
    key = cv.strip(key)
    if key.startswith("["):
        return _Line(
            no,
            "header",
            key=cv.lower(_nospace(code)),
            raw_key=code,
            comment=inline,
            wgquick=cv.lower(key) == "[interface]",
        )
    if not eq:
        return _Line(no, "noeq", key=cv.lower(code), raw_key=code, value=code, comment=inline)
    return _Line(no, "kv", key=cv.lower(key), raw_key=key, value=cv.strip(value), comment=inline)


def _classify(no: int, line: str) -> _Line:
    """Classify one raw line; ``#! `` lines (wgconfig's disabled peers) are classified inside."""
    s = cv.strip(line)
    if s == "#!" or s.startswith("#! "):
        inner = _classify_plain(no, cv.strip(s[3:]))
        inner.disabled = True
        if inner.kind == "comment":
            inner.comment = cv.strip(s[3:])
        return inner
    return _classify_plain(no, s)


class _Builder:
    """Groups classified lines into blocks and attaches comments to them.

    Rules: a key line belongs to the last header before it (wg-quick's rule);
    ``#! `` key lines belong to the last ``#! [Peer]`` header if no enabled line came
    in between. A run of comment lines directly above a header (no blank line
    between) belongs to that header's section, except leading ``### end ...`` lines
    (PiVPN's closing marker) which stay with the section before. Other comment lines
    belong to the section they are in; those before any section go to the interface.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.blocks: list[_Block] = []
        self.preamble: list[str] = []
        self.owner: _Block | None = None
        self.enabled: _Block | None = None
        self.disabled: _Block | None = None
        self.pending: list[str] = []

    def _flush(self) -> None:
        """Give the pending comment run to the current section (or the preamble)."""
        (self.owner.comments if self.owner else self.preamble).extend(self.pending)
        self.pending = []

    def _open(self, kind: str, line: _Line) -> _Block:
        """Start a section; the comment run right above it is its own."""
        keep = 0
        while keep < len(self.pending) and re.match(r"^#{2,}\s*end\b", self.pending[keep], re.I):
            keep += 1
        if keep:
            (self.owner.comments if self.owner else self.preamble).extend(self.pending[:keep])
        block = _Block(kind, line.no, disabled=line.disabled, above=self.pending[keep:], wgquick=line.wgquick)
        block.comments.extend(block.above)
        self.pending = []
        if line.comment:
            block.comments.append(_redact_comment(line.comment))
        self.blocks.append(block)
        self.owner = block
        return block

    def _as_comment(self, line: _Line, raw: str) -> None:
        """Keep a line wg-quick sees as a comment (a stray ``#! `` line) as a comment."""
        self.pending.append(_redact_comment(cv.strip(raw)))

    def add(self, line: _Line, raw: str) -> None:
        """Place one classified line."""
        if line.kind == "blank":
            self._flush()
        elif line.kind == "comment":
            self.pending.append(_redact_comment(line.comment))
        elif line.kind == "header":
            self._header(line, raw)
        elif line.disabled:
            if line.kind == "kv" and self.disabled is not None:
                self._flush()
                self.disabled.kvs.append(line)
                self.owner = self.disabled
                if line.comment:
                    self.disabled.comments.append(_redact_comment(line.comment))
            else:
                self._as_comment(line, raw)
        else:
            self._key_line(line)

    def _header(self, line: _Line, raw: str) -> None:
        """An enabled header opens a section; a ``#! [Peer]`` opens a disabled one."""
        if line.key not in ("[interface]", "[peer]"):
            if line.disabled:
                self._as_comment(line, raw)
                return
            name = line.raw_key if _SAFE_HEADER_RE.match(line.raw_key) else "header"
            raise ConfParseError(
                self.path, line.no, name, "unknown section (wg-quick knows [Interface] and [Peer])"
            )
        kind = line.key[1:-1]
        if line.disabled:
            if kind != "peer":  # only peers can be disabled; a `#! [Interface]` is a comment
                self._as_comment(line, raw)
                return
            self.disabled = self._open(kind, line)
        else:
            self.enabled = self._open(kind, line)
            self.disabled = None

    def _key_line(self, line: _Line) -> None:
        """An enabled ``key = value`` (or a line without ``=``) in the current section."""
        section = self.enabled
        if section is None:
            bare = _nospace(line.key)
            known = _WGQUICK_KEYS.get(line.key) or _WG_INTERFACE_KEYS.get(bare) or _PEER_KEYS.get(bare)
            raise ConfParseError(
                self.path, line.no, known or "line", "key before any [Interface] or [Peer] section"
            )
        if (
            line.kind == "noeq"
            and section.kind == "interface"
            and section.wgquick
            and line.key in _WGQUICK_KEYS
        ):
            # wg-quick reads the bare word as the value (`DNS` alone is the search domain "DNS")
            _warn(
                self.path,
                line.no,
                _WGQUICK_KEYS[line.key],
                "line has no '='; wg-quick reads its own name as the value",
            )
            line.kind = "kv"
        if line.kind == "noeq":
            raise ConfParseError(
                self.path,
                line.no,
                f"[{section.kind.capitalize()}]",
                "line has no '=' (expected Key = Value)",
            )
        self._flush()
        self.disabled = None
        section.kvs.append(line)
        self.owner = section
        if line.comment:
            section.comments.append(_redact_comment(line.comment))

    def finish(self) -> None:
        """Attach the comments at the end of the file."""
        self._flush()


def _ntop(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An address as glibc's inet_ntop prints it: what ``wg show`` and ``ip`` print."""
    family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    return socket.inet_ntop(family, addr.packed)


class _FieldError(ValueError):
    """A bad value; the caller adds file, line and field."""


def _parse_uint(value: str, maximum: int, what: str) -> int:
    """A decimal number (leading zeros allowed, as strtoul does) no larger than ``maximum``."""
    if not value.isascii() or not value.isdigit() or int(value) > maximum:
        raise _FieldError(f"not {what} (0-{maximum})")
    return int(value)


def _parse_fwmark(value: str) -> int:
    """``off``, a decimal number or ``0x`` hex, as ``wg`` accepts (``0X`` is refused by wg too)."""
    if cv.lower(value) == "off":
        return 0
    try:
        if len(value) > 2 and value.startswith("0x"):
            number = int(value[2:], 16)
            if not re.fullmatch(r"[0-9a-fA-F]+", value[2:]):
                raise ValueError
        else:
            number = _parse_uint(value, 0xFFFFFFFF, "a number")
    except (ValueError, _FieldError):
        raise _FieldError("not off, a number or 0x hex (0-0xffffffff)") from None
    if number > 0xFFFFFFFF:
        raise _FieldError("not off, a number or 0x hex (0-0xffffffff)")
    return number


def _parse_port(value: str) -> int:
    """ListenPort through getaddrinfo, as wg reads it."""
    try:
        return cv.wg_port(value)
    except cv.ValueProblem as exc:
        raise _FieldError(str(exc)) from None


def _parse_mtu(value: str) -> int:
    """MTU as ``ip link set mtu`` reads it (``0x500``, octal ``01420``)."""
    try:
        return cv.ip_mtu(value)
    except cv.ValueProblem as exc:
        raise _FieldError(str(exc)) from None


def _parse_keepalive(value: str) -> int:
    """``off`` or seconds 0-65535; ``off`` is 0 as in ``wg show``."""
    if cv.lower(value) == "off":
        return 0
    return _parse_uint(value, 65535, "off or seconds")


def _parse_allowed_ip(item: str) -> str:
    """One AllowedIPs entry, masked and formatted like ``wg show dump`` prints it.

    Parsed with inet_pton, as ``wg`` does (and 5x faster than ipaddress for big files).
    """
    ip_text, slash, cidr_text = item.partition("/")
    family = socket.AF_INET6 if ":" in ip_text else socket.AF_INET
    try:
        packed = socket.inet_pton(family, ip_text)
    except (OSError, ValueError):
        raise _FieldError("not an IP address or network") from None
    bits = len(packed) * 8
    cidr = _parse_uint(cidr_text, bits, "a prefix length") if slash else bits
    number = int.from_bytes(packed, "big") & (((1 << cidr) - 1) << (bits - cidr))
    return f"{socket.inet_ntop(family, number.to_bytes(len(packed), 'big'))}/{cidr}"


def _parse_allowed_ips(value: str) -> list[str]:
    """A comma list; wg refuses empty entries (``a,,b`` or a trailing comma)."""
    items = value.split(",")
    if any(not i for i in items):
        raise _FieldError("empty entry in the comma-separated list")
    return [_parse_allowed_ip(i) for i in items]


def _parse_endpoint(value: str) -> str:
    """``host:port``, ``[v6]:port`` or unbracketed v6 (wg splits at the last colon).

    The port is read through getaddrinfo as wg does (``https``, ``+51820``, ``70000``);
    an IPv4 host too (``10.1`` is 10.0.0.1). IP literals are normalised to what
    ``wg show`` prints; DNS names are kept as written (the kernel only ever shows the
    address they resolved to) and never looked up here.
    """
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":") or len(rest) < 2:
            raise _FieldError("not [address]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host or not port_text:
            raise _FieldError("not host:port")
    try:
        port = cv.wg_port(port_text)
    except cv.ValueProblem as exc:
        raise _FieldError(f"{exc} after the last ':'") from None
    if ":" not in host:
        v4 = cv.numeric_ipv4(host)
        if v4 is not None:
            return f"{v4}:{port}"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if ":" in host or not _HOSTNAME_RE.match(host):
            raise _FieldError("not host:port with an IP address or DNS name") from None
        return f"{host}:{port}"
    if ip.version == 4:
        return f"{_ntop(ip)}:{port}"
    scope = f"%{ip.scope_id}" if ip.scope_id else ""
    return f"[{_ntop(ipaddress.IPv6Address(ip.packed))}{scope}]:{port}"


def _parse_address(value: str) -> list[str]:
    """Address entries as wg-quick splits them (commas, IFS) and ``ip address add`` reads them."""
    out = []
    for item in cv.ifs_split(value.replace(",", " ")):
        try:
            out.append(cv.ip_address(item))
        except cv.ValueProblem as exc:
            raise _FieldError(str(exc)) from None
    return out


def _address_key(address: str) -> str:
    """What the kernel refuses twice: an IPv4 address with its prefix, an IPv6 address with any."""
    return address.split("/")[0] if ":" in address else address


def _check_new_address(seen: list[str], address: str) -> None:
    """wg-quick runs ``ip address add`` per entry: a repeat fails it (EEXIST) and wg-quick up stops."""
    if any(_address_key(a) == _address_key(address) for a in seen):
        raise _FieldError("address given twice (ip refuses the second; wg-quick up fails)")


def _parse_bool(value: str) -> bool:
    """wg-quick's read_bool: true or false, any case, nothing else."""
    if cv.lower(value) in ("true", "false"):
        return cv.lower(value) == "true"
    raise _FieldError("must be true or false")


def _peer_name(block: _Block) -> str | None:
    """A peer's name from its comments: ``# Name = x``, ``### x`` / ``### begin x ###``, or
    the comment line right above its ``[Peer]`` header (unless it is a commented-out
    ``Key = value`` setting), in that order of preference."""
    for c in block.comments:
        m = _NAME_KEY_RE.match(c)
        if m and m.group(1):
            return m.group(1)
    for c in block.comments:
        if c.startswith("###"):
            text = c.strip("#").strip()
            if re.match(r"(?i)^end\b", text):
                continue
            text = re.sub(r"(?i)^begin\s+", "", text).strip()
            if text:
                return text
    if block.above:
        text = block.above[-1].lstrip("#").strip()
        if text and not _SETTING_RE.search(text):
            return text
    return None


def _wgfield(path: str, line: _Line, canonical: str, fn: Callable[[str], object]) -> object:
    """Parse one wg value, turning any value error into one error naming file, line, field."""
    value = _nospace(line.value)
    if not value:
        raise ConfParseError(path, line.no, canonical, "empty value (wg refuses it)")
    try:
        return fn(value)
    except _FieldError as exc:
        raise ConfParseError(path, line.no, canonical, str(exc)) from None
    except StateError:
        raise ConfParseError(path, line.no, canonical, "not a base64 WireGuard key of 32 bytes") from None


def _key(value: str) -> str:
    """A base64 key; the StateError is reworded by the caller without the value."""
    return parse_key(value, "key")


@dataclass
class _PeerBlock:
    """What one [Peer] block sets; None = the block has no such line (wg leaves it as it was)."""

    block: _Block
    public_key: str
    psk: tuple[Secret | None] | None = None  # (value or None for "none") when the block sets it
    allowed: list[tuple[str, int]] = field(default_factory=list)  # (prefix, line)
    endpoint: str | None = None
    keepalive: int | None = None


def _read_peer_block(path: str, block: _Block) -> _PeerBlock:
    """One [Peer] block's lines, each checked the way wg checks it; last line of a key wins."""
    public_key: str | None = None
    out = _PeerBlock(block, "")
    for line in block.kvs:
        canonical = _PEER_KEYS.get(_nospace(line.key))
        if canonical is None:
            name = _safe_word(line.raw_key, "key")
            raise ConfParseError(path, line.no, name, "unknown [Peer] key")
        if canonical == "PublicKey":
            public_key = str(_wgfield(path, line, canonical, _key))
        elif canonical == "PresharedKey":
            psk = cv.wg_key_or_none(str(_wgfield(path, line, canonical, _key)))
            out.psk = (Secret(psk) if psk else None,)
        elif canonical == "AllowedIPs":
            items = _wgfield(path, line, canonical, _parse_allowed_ips)
            out.allowed.extend((ip, line.no) for ip in items)  # type: ignore[attr-defined]
        elif canonical == "Endpoint":
            out.endpoint = str(_wgfield(path, line, canonical, _parse_endpoint))
        else:
            out.keepalive = int(_wgfield(path, line, canonical, _parse_keepalive))  # type: ignore[call-overload]
    if public_key is None:
        raise ConfParseError(path, block.header_no, "PublicKey", "[Peer] has no PublicKey (wg refuses it)")
    out.public_key = public_key
    return out


class _PeerDraft:
    """One peer being applied block by block, as ``wg setconf`` applies repeated blocks.

    Each block overrides what it sets; its AllowedIPs replace the peer's (wg sends
    ``replace_allowed_ips`` for every block). Comments and names of all blocks are kept.
    """

    def __init__(self, first: _PeerBlock) -> None:
        self.blocks = [first.block]
        self.public_key = first.public_key
        self.psk: Secret | None = None
        self.allowed: dict[str, None] = {}  # ordered set: insertion order is wg's order
        self.endpoint: str | None = None
        self.keepalive = 0

    def apply(self, pb: _PeerBlock, owner: dict[str, _PeerDraft] | None, path: str) -> None:
        """Apply one block; ``owner`` (live peers only) moves a prefix to its last claimant."""
        if pb.block is not self.blocks[0]:
            self.blocks.append(pb.block)
        if pb.psk is not None:
            self.psk = pb.psk[0]
        if pb.endpoint is not None:
            self.endpoint = pb.endpoint
        if pb.keepalive is not None:
            self.keepalive = pb.keepalive
        if owner is not None:
            for prefix in self.allowed:
                owner.pop(prefix, None)
        self.allowed = {}
        for prefix, lineno in pb.allowed:
            other = owner.get(prefix) if owner is not None else None
            if other is not None and other is not self:
                del other.allowed[prefix]
                _warn(
                    path, lineno, "AllowedIPs", "prefix also in an earlier peer; wg gives it to this one only"
                )
            self.allowed.pop(prefix, None)  # wg moves a repeated prefix to the end of the list
            self.allowed[prefix] = None
            if owner is not None:
                owner[prefix] = self

    def peer(self, disabled: bool) -> Peer:
        """The Peer wg would run (or the disabled peer the file describes)."""
        comments: list[str] = []
        for b in self.blocks:
            comments.extend(b.comments)
        names = (_peer_name(b) for b in self.blocks)
        peer = Peer(
            public_key=self.public_key,
            preshared_key=self.psk,
            allowed_ips=tuple(self.allowed),
            endpoint=self.endpoint,
            persistent_keepalive=self.keepalive,
            name=next((n for n in names if n), None),
            comments=tuple(comments),
            disabled=disabled,
        )
        _set_provenance(peer, ("public_key", "preshared_key", "allowed_ips", "endpoint"))
        _set_provenance(peer, ("persistent_keepalive", "name", "comments", "disabled"))
        peer.provenance = shared(peer.provenance)
        return peer


def _build_peers(path: str, blocks: list[_Block | None], own_public: str | None) -> dict[str, Peer]:
    """Every peer of the file in file order, read the way ``wg setconf`` runs the file.

    Live blocks: a bad value is an error (wg refuses the file); a repeated public key
    merges into one peer (warned); a peer with the interface's own key is dropped (wg
    drops it; warned); a prefix in two peers stays with the last (warned). Disabled
    ``#! `` blocks are only comments to wg-quick: a bad one, or a disabled copy of a
    live peer, is warned about and left to the raw text, never an error.
    """
    live: dict[str, _PeerDraft] = {}
    disabled: dict[str, _PeerDraft] = {}
    order: dict[str, None] = {}  # first appearance of each key (a dict: 10k peers, no O(n^2))
    owner: dict[str, _PeerDraft] = {}
    for index, block in enumerate(blocks):
        blocks[index] = None  # free each block's lines once it is read (10k peers: ~15 MB)
        if block is None or block.kind != "peer":
            continue
        if block.disabled:
            try:
                pb = _read_peer_block(path, block)
            except ConfParseError as exc:
                _warn(
                    path,
                    exc.lineno,
                    exc.field_name,
                    f"disabled peer not read ({exc.message}); kept in the raw text",
                )
                continue
            if pb.public_key in disabled:
                _warn(
                    path,
                    block.header_no,
                    "PublicKey",
                    "disabled peer repeats an earlier disabled peer; kept in the raw text",
                )
                continue
            disabled[pb.public_key] = _PeerDraft(pb)
            disabled[pb.public_key].apply(pb, None, path)
        else:
            pb = _read_peer_block(path, block)
            if own_public is not None and pb.public_key == own_public:
                _warn(
                    path, block.header_no, "PublicKey", "peer has the interface's own public key; wg drops it"
                )
                continue
            draft = live.get(pb.public_key)
            if draft is None:
                draft = live[pb.public_key] = _PeerDraft(pb)
            else:
                _warn(
                    path,
                    block.header_no,
                    "PublicKey",
                    "same peer as an earlier [Peer]; wg merges them (this block's values win)",
                )
            draft.apply(pb, owner, path)
        order.setdefault(pb.public_key, None)
    out: dict[str, Peer] = {}
    for key in order:
        if key in live:
            out[key] = live[key].peer(False)
            if key in disabled:
                line = disabled[key].blocks[0].header_no
                _warn(
                    path,
                    line,
                    "PublicKey",
                    "disabled copy of a live peer; wg runs the live one, the copy stays in the raw text",
                )
        elif key in disabled:
            out[key] = disabled[key].peer(True)
    return out


def _set_provenance(obj: Peer | Interface, names: tuple[str, ...]) -> None:
    """Every field this source set (not None) came from the conf file."""
    for name in names:
        if getattr(obj, name) is not None:
            obj.provenance[name] = Source.CONF


@dataclass
class _IfaceValues:
    """The [Interface] values being collected, in wg-quick's append/last-wins way."""

    private_key: Secret | None = None
    listen_port: int | None = None
    fwmark: int | None = None
    addresses: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    mtu: tuple[str, _Line] | None = None  # the last MTU line: only it reaches `ip`
    table: str | None = None
    hooks: dict[str, list[str]] = field(default_factory=lambda: {v: [] for v in _HOOKS.values()})
    save_config: bool = False


def _interface_key(path: str, line: _Line, wgquick: bool) -> tuple[str, str]:
    """(lowercase key, canonical name) of an [Interface] line, the way wg-quick then wg match it."""
    if wgquick and line.key in _WGQUICK_KEYS:
        return line.key, _WGQUICK_KEYS[line.key]
    bare = _nospace(line.key)
    if bare in _WG_INTERFACE_KEYS:
        return bare, _WG_INTERFACE_KEYS[bare]
    if line.key in _WGQUICK_KEYS:
        raise ConfParseError(
            path,
            line.no,
            _WGQUICK_KEYS[line.key],
            "wg-quick only reads this key under a header written exactly [Interface]; wg refuses it",
        )
    raise ConfParseError(path, line.no, _safe_word(line.raw_key, "key"), "unknown [Interface] key")


def _apply_interface_line(path: str, line: _Line, vals: _IfaceValues, wgquick: bool) -> None:
    """Apply one [Interface] line: wg-quick's keys by wg-quick's rules, wg's keys by wg's."""
    key, canonical = _interface_key(path, line, wgquick)
    value = line.value
    try:
        if key == "privatekey":  # all-zero is "none" to wg; the kernel keeps it clamped
            private = cv.wg_key_or_none(str(_wgfield(path, line, canonical, _key)))
            vals.private_key = Secret(cv.clamped(private)) if private else None
        elif key == "listenport":
            vals.listen_port = int(_wgfield(path, line, canonical, _parse_port))  # type: ignore[call-overload]
        elif key == "fwmark":
            vals.fwmark = int(_wgfield(path, line, canonical, _parse_fwmark))  # type: ignore[call-overload]
        elif key == "address":
            for address in _parse_address(value):
                _check_new_address(vals.addresses, address)
                vals.addresses.append(address)
        elif key == "dns":
            vals.dns.extend(cv.ifs_split(value.replace(",", " ")))
        elif key == "mtu":  # wg-quick: last wins, empty means "automatic"; `ip` reads it
            vals.mtu = (value, line) if value else None
        elif key == "table":
            vals.table = value or None
        elif key in _HOOKS:
            vals.hooks[_HOOKS[key]].append(value)
        else:
            vals.save_config = _parse_bool(value)
    except _FieldError as exc:
        raise ConfParseError(path, line.no, canonical, str(exc)) from None


def _build_interface(name: str, path: str, text: str, blocks: list[_Block], preamble: list[str]) -> Interface:
    """All [Interface] sections (wg-quick lets there be several) as one Interface, no peers."""
    vals = _IfaceValues()
    comments = list(preamble)
    for block in blocks:
        if block.kind != "interface":
            continue
        comments.extend(block.comments)
        for line in block.kvs:
            _apply_interface_line(path, line, vals, block.wgquick)
    mtu = None
    if vals.mtu is not None:  # wg-quick keeps the last MTU as text; only that one goes to `ip`
        try:
            mtu = _parse_mtu(vals.mtu[0])
        except _FieldError as exc:
            raise ConfParseError(path, vals.mtu[1].no, "MTU", str(exc)) from None
    iface = Interface(
        name=name,
        private_key=vals.private_key,
        public_key=public_key_from_private(vals.private_key) if vals.private_key else None,
        listen_port=vals.listen_port,
        fwmark=vals.fwmark,
        addresses=tuple(vals.addresses),
        dns=tuple(vals.dns),
        mtu=mtu,
        table=vals.table,
        pre_up=tuple(vals.hooks["pre_up"]),
        post_up=tuple(vals.hooks["post_up"]),
        pre_down=tuple(vals.hooks["pre_down"]),
        post_down=tuple(vals.hooks["post_down"]),
        save_config=vals.save_config,
        conf_path=path,
        conf_text=Secret(text),
        comments=tuple(comments),
    )
    _set_provenance(
        iface,
        ("private_key", "public_key", "listen_port", "fwmark", "addresses", "dns", "mtu", "table"),
    )
    _set_provenance(
        iface, ("pre_up", "post_up", "pre_down", "post_down", "save_config", "conf_path", "conf_text")
    )
    _set_provenance(iface, ("comments",))
    return iface


def _wgconfig_check(text: str, path: str, peers: dict[str, Peer]) -> None:
    """Run wgconfig over the file and compare its view of peers with ours; log disagreements.

    Advisory only: wg-quick and wg decide what runs, so a file they accept is read
    even when wgconfig cannot parse it (e.g. a ``[ Peer ]`` header). The warning
    tells the operator that wgrest v1 and tools built on wgconfig cannot edit it.
    """
    wgc = wgconfig.WGConfig()
    wgc.read_from_fileobj(io.StringIO(text, newline="\n"))
    try:
        theirs = wgc.get_peers(keys_only=False, include_disabled=True, include_details=True)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        m = re.search(r"in line (\d+)", str(exc))
        where = f"{path}:{int(m.group(1)) + 1}" if m else path
        log.warning(
            "%s: wgconfig cannot parse this file (wg-quick can); tools using wgconfig cannot edit it", where
        )
        return
    for key, peer in peers.items():
        data = theirs.get(key)
        flag = data.get(wgconfig.WGConfig.SECTION_DISABLED) if isinstance(data, dict) else None
        if flag is not None and bool(flag) != peer.disabled:
            log.debug(
                "%s: wgconfig and wg-quick disagree on whether a peer is disabled; using wg-quick's view",
                path,
            )
    if len(theirs) != len(peers):
        log.debug("%s: wgconfig sees %d peers, wg-quick reading %d", path, len(theirs), len(peers))


def parse_conf(text: str, path: str) -> Interface:
    """Parse one wg-quick conf file's text into an Interface named after the file.

    Pure (no I/O). Raises ConfParseError naming ``path:line Field`` for anything
    wg-quick or wg would refuse; never returns a half-parsed interface.
    """
    name = Path(path).name.removesuffix(".conf")
    if text.startswith("\ufeff"):
        raise ConfParseError(path, 1, "encoding", "starts with a byte order mark, which wg-quick cannot read")
    builder = _Builder(path)
    for i, raw in enumerate(_split_lines(text)):
        builder.add(_classify(i + 1, raw), raw)
    builder.finish()
    blocks: list[_Block | None] = list(builder.blocks)
    iface = _build_interface(name, path, text, builder.blocks, builder.preamble)
    del builder  # from here on ``blocks`` holds the only reference to each block
    iface.peers.update(_build_peers(path, blocks, iface.public_key))
    _wgconfig_check(text, path, iface.peers)
    return iface


# a file rewritten while it is read is read again, at most this often, then reported
READ_ATTEMPTS = 5
_RETRY_PAUSE_S = 0.01  # x attempt: gives a writer between truncate and write a moment
# a file modified this recently may be between an editor's truncate and its last write:
# it is read once more after a pause and must come back the same (same size, times, inode)
SETTLE_NS = 50_000_000


def _after_stat(path: str) -> None:
    """Called between the first stat and the read; tests replace it to rewrite the file there."""


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is rewritten in place or replaced: size, times, inode."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _read_once(path: str) -> tuple[bytes, tuple[int, ...] | None]:
    """One read of the file: (bytes, its identity if it stayed the same file, unchanged, throughout)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfParseError(path, None, "file", f"cannot open: {exc.strerror}") from None
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise ConfParseError(path, None, "file", "not a regular file")
        if before.st_size > MAX_CONF_BYTES:
            raise ConfParseError(path, None, "file", f"larger than {MAX_CONF_BYTES} bytes")
        _after_stat(path)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_CONF_BYTES + 1)
        after = os.fstat(fd)
        try:
            now = os.stat(path)  # replaced by a rename: the name now points elsewhere
        except FileNotFoundError:
            now = None
    except OSError as exc:
        raise ConfParseError(path, None, "file", f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    stable = (
        _identity(before) == _identity(after)
        and now is not None
        and _identity(now) == _identity(after)
        and len(data) == after.st_size
    )
    return data, _identity(after) if stable else None


def _settle_pause(ident: tuple[int, ...]) -> float:
    """Seconds until the file's last change is SETTLE_NS old (at most SETTLE_NS: a future mtime)."""
    return min(SETTLE_NS, max(0, max(ident[3], ident[4]) + SETTLE_NS - time.time_ns())) / 1e9


def _read_bytes(path: str) -> bytes:
    """The whole file as one consistent snapshot: never half of an in-place rewrite.

    A file whose size, mtime, ctime or inode changed during the read (or whose
    length differs from its size) is read again, up to READ_ATTEMPTS times. A file
    modified within SETTLE_NS must also read the same after a pause: a writer stopped
    between truncate and write leaves a half file that is stable for a moment.
    """
    settling: tuple[int, ...] | None = None
    for attempt in range(1, READ_ATTEMPTS + 1):
        data, ident = _read_once(path)
        if ident is not None and (ident == settling or time.time_ns() - max(ident[3], ident[4]) >= SETTLE_NS):
            return data
        settling = ident
        what = "just modified" if ident is not None else "changed while being read"
        log.debug("%s: %s (attempt %d); reading again", path, what, attempt)
        if attempt < READ_ATTEMPTS:
            time.sleep(_settle_pause(ident) if ident is not None else _RETRY_PAUSE_S * attempt)
    raise ConfParseError(path, None, "file", f"changed while being read, {READ_ATTEMPTS} times in a row")


def _latin1_bytes(exc: UnicodeError) -> tuple[str, int]:
    """Decode error handler: a byte that is not UTF-8 is read as its Latin-1 character."""
    assert isinstance(exc, UnicodeDecodeError)
    return exc.object[exc.start : exc.end].decode("latin-1"), exc.end


codecs.register_error("wgsyncd-latin1", _latin1_bytes)


def _read_text(path: str) -> str:
    """Read a conf file without blocking on a FIFO, swallowing a huge file or tearing a rewrite.

    bash and wg read bytes, so a file that is not UTF-8 (a Latin-1 comment) runs; it is
    read here with each stray byte as its Latin-1 character, and a warning: the stored
    text is UTF-8, so that byte is the one thing a restore would not give back as it was.
    """
    data = _read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = data[: exc.start].count(b"\n") + 1
        _warn(path, lineno, "encoding", "not valid UTF-8 (wg-quick runs it); stray bytes read as Latin-1")
        return data.decode("utf-8", errors="wgsyncd-latin1")


def _conf_names(directory: str) -> list[str]:
    """The ``*.conf`` names in the directory, sorted; other names are not ours."""
    with os.scandir(directory) as it:
        return sorted(e.name for e in it if e.name.endswith(".conf"))


def read(
    cfg: ConfConfig,
    want: Callable[[str], bool] | None = None,
    parsed: dict[str, tuple[bytes, Interface]] | None = None,
) -> SourceResult:
    """Read every wg-quick conf in ``cfg.directory`` into one SourceResult (source=CONF).

    A missing directory means "no conf files here" (available=False). A bad file gives
    one interface-scoped SourceError and its interface is left out entirely; the other
    files still count. ``want(ifname)`` False skips an interface without reading it.
    ``parsed`` is the caller's memo (memo.Memo.conf): path -> (sha256, parse) of last cycle.
    """
    parsed = {} if parsed is None else parsed
    result = SourceResult(source=Source.CONF)
    if not cfg.enabled:
        result.available = False
        return result
    try:
        names = _conf_names(cfg.directory)
    except FileNotFoundError:
        result.available = False
        return result
    except OSError as exc:
        result.errors.append(SourceError(Source.CONF, cfg.directory, f"cannot list: {exc.strerror}"))
        return result
    seen: set[str] = set()
    for fname in names:
        if not CONF_NAME_RE.match(fname):
            log.debug("%s: skipped, %r is not a wg-quick interface file name", cfg.directory, fname)
            continue
        ifname = fname.removesuffix(".conf")
        if want is not None and not want(ifname):
            continue
        path = os.path.join(cfg.directory, fname)
        text: str | None = None
        try:
            text = _read_text(path)
            iface = _parse_cached(text, path, seen, parsed)
        except ConfParseError as exc:
            if exc.lineno is None and not os.path.lexists(path):
                log.debug("%s: vanished while reading the directory", path)
                continue
            result.errors.append(SourceError(Source.CONF, exc.where, exc.message, interface=ifname))
            if text is not None:  # refused, never guessed at; but its text is still backed up
                result.unparsed[ifname] = (path, Secret(text))
            continue
        result.interfaces[ifname] = iface
    # compare as os.path.join built the keys: "/etc/wireguard/" must match its files too
    here = os.path.dirname(os.path.join(cfg.directory, "x"))
    for stale in [p for p in parsed if os.path.dirname(p) == here and p not in seen]:
        del parsed[stale]
    return result


def _parse_cached(
    text: str, path: str, seen: set[str], parsed: dict[str, tuple[bytes, Interface]]
) -> Interface:
    """parse_conf, reusing the last result for this path when the text is byte-identical.

    ``parsed``: path -> (sha256 of the text, its parse), the caller's memo. A long-running
    daemon re-reads every file each cycle; an unchanged file (same bytes, not merely the
    same mtime) is not parsed again. The cached Interface is shared (and sealed by the cycle).
    """
    seen.add(path)
    digest = hashlib.sha256(text.encode()).digest()
    hit = parsed.get(path)
    if hit is not None and hit[0] == digest:
        return hit[1]
    parsed.pop(path, None)
    iface = parse_conf(text, path)
    parsed[path] = (digest, iface)
    return iface
