"""wg-quick conf text: read the way wg-quick and wg read it, and written so it reads back.

The one home of the conf format (/work/shared/CONF-FORMAT.md): the conf source
(sources/conffiles.py) reads files through :func:`parse_conf`, and restore
(restore/render.py, restore/files.py, restore/loading.py) writes and re-reads conf
text through it. wg-quick (bash ``parse_options``) and ``wg setconf`` (C) are what a
host really runs, so their rules are the rules here, not those of any Python library:

- lines and sections (wire/conflines.py): a comment starts at the first ``#``
  anywhere in a line, hooks included; ``key = value`` splits at the first ``=``;
  keys and section headers are case-insensitive; the last line may lack its newline;
- values (wire/conffields.py, wire/confvalues.py): ``wg`` removes every whitespace
  character of the lines it gets (``Allowed IPs = 10.0.0.2 / 32`` is valid) and
  refuses empty values; ports through getaddrinfo, MTU and Address as ``ip`` parses
  them, ASCII-only whitespace and case; AllowedIPs are kept masked as the kernel
  prints them, Address keeps its host bits; a private key is clamped, zero keys are none;
- peers (wire/confpeers.py): repeated [Peer] keys merge as ``wg setconf`` applies
  them, a prefix stays with its last peer, the interface's own key is no peer.

Suspicious files get a warning naming the line; ``#! `` disabled blocks are never an
error. A file a tool refuses is a ConfParseError naming ``path:line Field``, never
a value. Pure: no I/O, nothing here reads or writes a file.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from wgsyncd import validate
from wgsyncd.state import Interface, Peer, Secret, Source, public_key_from_private
from wgsyncd.wire import conffields as cf
from wgsyncd.wire import confvalues as cv
from wgsyncd.wire.conflines import (
    WG_INTERFACE_KEYS,
    WGQUICK_KEYS,
    Block,
    ConfParseError,
    Line,
    read_blocks,
    safe_word,
)
from wgsyncd.wire.confpeers import File, build_peers, stored_comments
from wgsyncd.wire.confvalues import ZERO_KEY_B64

__all__ = ["ZERO_KEY_B64", "ConfParseError", "parse_conf", "render_conf", "render_running"]

_RESTORE_REFUSES = "wgsyncd's restore refuses such a value, so only the file's text is backed up"
_HOOKS = {"preup": "pre_up", "postup": "post_up", "predown": "pre_down", "postdown": "post_down"}


@dataclass
class _IfaceValues:
    """The [Interface] values being collected, in wg-quick's append/last-wins way."""

    private_key: Secret | None = None
    listen_port: int | None = None
    fwmark: int | None = None
    addresses: list[str] = field(default_factory=list)
    address_keys: set[str] = field(default_factory=set)  # what `ip` refuses to add twice
    dns: list[str] = field(default_factory=list)
    mtu: tuple[str, Line] | None = None  # the last MTU line: only it reaches `ip`
    table: str | None = None
    hooks: dict[str, list[str]] = field(default_factory=lambda: {v: [] for v in _HOOKS.values()})
    save_config: bool = False
    comments: list[str] = field(default_factory=list)


def _interface_key(path: str, line: Line, wgquick: bool) -> tuple[str, str]:
    """(lowercase key, canonical name) of an [Interface] line, the way wg-quick then wg match it."""
    if wgquick and line.key in WGQUICK_KEYS:
        return line.key, WGQUICK_KEYS[line.key]
    bare = cv.nospace(line.key)
    if bare in WG_INTERFACE_KEYS:
        return bare, WG_INTERFACE_KEYS[bare]
    if line.key in WGQUICK_KEYS:
        raise ConfParseError(
            path,
            line.no,
            WGQUICK_KEYS[line.key],
            "wg-quick only reads this key under a header written exactly [Interface]; wg refuses it",
        )
    raise ConfParseError(path, line.no, safe_word(line.raw_key, "key"), "unknown [Interface] key")


def _apply_interface_line(path: str, line: Line, vals: _IfaceValues, wgquick: bool) -> None:
    """Apply one [Interface] line: wg-quick's keys by wg-quick's rules, wg's keys by wg's."""
    key, canonical = _interface_key(path, line, wgquick)
    value = line.value
    try:
        if key == "privatekey":  # all-zero is "none" to wg; the kernel keeps it clamped
            private = cv.wg_key_or_none(cf.wgfield(path, line, canonical, cf.key))
            vals.private_key = Secret(cv.clamped(private)) if private else None
        elif key == "listenport":
            vals.listen_port = cf.wgfield(path, line, canonical, cf.port)
        elif key == "fwmark":
            vals.fwmark = cf.wgfield(path, line, canonical, cf.fwmark)
        elif key == "address":
            for address in cf.addresses(value):
                cf.check_new_address(vals.address_keys, address)
                vals.addresses.append(address)
                vals.address_keys.add(cf.address_key(address))
        elif key == "dns":
            vals.dns.extend(validate.dns_entry(v) for v in cv.ifs_split(value.replace(",", " ")))
        elif key == "mtu":  # wg-quick: last wins, empty means "automatic"; `ip` reads it
            vals.mtu = (value, line) if value else None
        elif key == "table":
            vals.table = validate.table(value) if value else None
        elif key in _HOOKS:
            vals.hooks[_HOOKS[key]].append(validate.text(value, canonical))
        else:
            vals.save_config = cf.boolean(value)
    except cf.FieldError as exc:
        raise ConfParseError(path, line.no, canonical, str(exc)) from None
    except validate.Invalid as exc:  # wg-quick may run it; restore refuses it from the database
        raise ConfParseError(path, line.no, canonical, f"{exc.message}; {_RESTORE_REFUSES}") from None


def _interface_values(path: str, blocks: list[Block], preamble: list[str]) -> _IfaceValues:
    """All [Interface] sections (wg-quick lets there be several) read into one set of values."""
    vals = _IfaceValues(comments=list(preamble))
    for block in blocks:
        if block.kind != "interface":
            continue
        vals.comments.extend(block.comments)
        for line in block.kvs:
            _apply_interface_line(path, line, vals, block.wgquick)
    return vals


def _mtu(path: str, vals: _IfaceValues) -> int | None:
    """wg-quick keeps the last MTU as text; only that one goes to ``ip``, which reads it here."""
    if vals.mtu is None:
        return None
    try:
        return cf.mtu(vals.mtu[0])
    except cf.FieldError as exc:
        raise ConfParseError(path, vals.mtu[1].no, "MTU", str(exc)) from None


_IFACE_FIELDS = (
    *("private_key", "public_key", "listen_port", "fwmark", "addresses", "dns", "mtu", "table"),
    *("pre_up", "post_up", "pre_down", "post_down", "save_config", "conf_path", "conf_text", "comments"),
)


def _interface(
    text: str, path: str, vals: _IfaceValues, mtu: int | None, own: str | None
) -> dict[str, object]:
    """The Interface's fields (all but name and peers), each as the conf file gives it."""
    return {
        "private_key": vals.private_key,
        "public_key": own,
        "listen_port": vals.listen_port,
        "fwmark": vals.fwmark,
        "addresses": tuple(vals.addresses),
        "dns": tuple(vals.dns),
        "mtu": mtu,
        "table": vals.table,
        **{k: tuple(v) for k, v in vals.hooks.items()},
        "save_config": vals.save_config,
        "conf_path": path,
        "conf_text": Secret(text),
        "comments": stored_comments(path, None, vals.comments, "interface"),
    }


@contextmanager
def _no_collection() -> Iterator[None]:
    """The cyclic garbage collector paused: a parse makes no cycles, only many objects.

    10,000 peers are ~100,000 objects alive together until the peers are built;
    their allocation set off full collections that took a third of the parse.
    Reference counting still frees everything; the collector resumes as it was.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_conf(text: str, path: str) -> Interface:
    """Parse one wg-quick conf file's text into an Interface named after the file.

    Pure (no I/O). Raises ConfParseError naming ``path:line Field`` for anything
    wg-quick or wg would refuse; never returns a half-parsed interface.
    """
    with _no_collection():
        return _parse(text, path)


def _parse(text: str, path: str) -> Interface:
    """parse_conf's work: lines into blocks, the [Interface] values, then the peers."""
    name = Path(path).name.removesuffix(".conf")
    if text.startswith("\ufeff"):
        raise ConfParseError(path, 1, "encoding", "starts with a byte order mark, which wg-quick cannot read")
    nul = text.find("\x00")
    if nul >= 0:  # bash cannot hold one (what wg-quick runs is not this text); restore refuses it
        raise ConfParseError(
            path, text.count("\n", 0, nul) + 1, "encoding", f"a NUL byte; {_RESTORE_REFUSES}"
        )
    builder = read_blocks(text, path)
    blocks: list[Block | None] = list(builder.blocks)
    vals = _interface_values(path, builder.blocks, builder.preamble)
    mtu = _mtu(path, vals)
    own = public_key_from_private(vals.private_key) if vals.private_key else None
    del builder  # from here on ``blocks`` holds the only reference to each block
    peers = build_peers(File(path, validate.plain_text(text)), blocks, own)
    values = _interface(text, path, vals, mtu, own)
    # every field this source set (not None) came from the conf file
    provenance = {k: Source.CONF for k in _IFACE_FIELDS if values[k] is not None}
    return Interface(name=name, **values, peers=peers, provenance=provenance)  # type: ignore[arg-type]


# ---------------------------------------------------------------- writing


def _peer_lines(peer: Peer, *, spell_off: bool = False) -> list[str]:
    """The wg keys of one peer, shared by the wg-quick, setconf and syncconf renderings.

    ``spell_off`` also writes the "off" values (the all-zero preshared key, keepalive
    0): `wg syncconf` leaves a field of an existing peer alone when it is not named.
    """
    out = [f"PublicKey = {peer.public_key}"]
    if peer.preshared_key or spell_off:
        out.append(f"PresharedKey = {peer.preshared_key.reveal() if peer.preshared_key else ZERO_KEY_B64}")
    if peer.allowed_ips:
        out.append(f"AllowedIPs = {', '.join(peer.allowed_ips)}")
    if peer.endpoint:
        out.append(f"Endpoint = {peer.endpoint}")
    if peer.persistent_keepalive or spell_off:
        out.append(f"PersistentKeepalive = {peer.persistent_keepalive or 0}")
    return out


def _interface_wg_lines(iface: Interface) -> list[str]:
    """PrivateKey, ListenPort and FwMark lines, as far as they are known."""
    out = []
    if iface.private_key:
        out.append(f"PrivateKey = {iface.private_key.reveal()}")
    if iface.listen_port:
        out.append(f"ListenPort = {iface.listen_port}")
    if iface.fwmark:
        out.append(f"FwMark = {iface.fwmark:#x}")
    return out


def render_conf(iface: Interface) -> str:
    """A wg-quick conf for ``iface``, which :func:`parse_conf` reads back as the same document.

    Comments directly above their section, ``# Name = x`` when the name is not
    already in a comment, disabled peers as ``#! `` lines (wgconfig's style). The
    values must have been checked by the caller (restore/values.py): none may add a
    line (a newline in a DNS entry would). The text holds key values: never log it.
    """
    lines = [f"# {c.lstrip('#').strip()}" if not c.startswith("#") else c for c in iface.comments or ()]
    lines.append("[Interface]")
    if iface.addresses:
        lines.append(f"Address = {', '.join(iface.addresses)}")
    if iface.dns:
        lines.append(f"DNS = {', '.join(iface.dns)}")
    if iface.mtu:
        lines.append(f"MTU = {iface.mtu}")
    if iface.table:
        lines.append(f"Table = {iface.table}")
    for key, hooks in (
        ("PreUp", iface.pre_up),
        ("PostUp", iface.post_up),
        ("PreDown", iface.pre_down),
        ("PostDown", iface.post_down),
    ):
        lines.extend(f"{key} = {h}" for h in hooks or ())
    if iface.save_config:
        lines.append("SaveConfig = true")
    if not iface.private_key:
        lines.append("# PrivateKey was not stored in the database (no recovery key): set it before use")
    lines.extend(_interface_wg_lines(iface))
    for peer in iface.peers.values():
        lines.append("")
        comments = list(peer.comments or ())
        if peer.name and not any(
            re.match(rf"(?i)^#+\s*name\s*[=:]\s*{re.escape(peer.name)}\s*$", c) for c in comments
        ):
            comments.insert(0, f"# Name = {peer.name}")
        lines.extend(c if c.startswith("#") else f"# {c}" for c in comments)
        body = ["[Peer]", *_peer_lines(peer)]
        lines.extend(f"#! {b}" for b in body) if peer.disabled else lines.extend(body)
    return "\n".join(lines) + "\n"


def render_running(iface: Interface, peers: list[Peer], *, spell_off: bool) -> str:
    """A ``wg setconf``/``wg syncconf`` file: the [Interface] wg lines and ``peers``.

    ``spell_off`` writes every peer's "off" values too (the all-zero preshared key,
    keepalive 0), for `wg syncconf`, which leaves a field alone when it is not named.
    """
    lines = ["[Interface]", *_interface_wg_lines(iface)]
    for peer in peers:
        lines += ["", "[Peer]", *_peer_lines(peer, spell_off=spell_off)]
    return "\n".join(lines) + "\n"
