"""Conf texts of a desired interface: wg-quick conf, ``wg setconf`` and ``wg syncconf`` files.

Also the display redaction of conf lines (key values as fingerprints), which the
dry-run diff of conf files uses. The rendered texts hold key values: write them
out or pipe them to ``wg``, never log them.
"""

from __future__ import annotations

import hashlib
import re

from wgsyncd import validate
from wgsyncd.canonical import ZERO_KEY_B64
from wgsyncd.restore.loading import running_peers
from wgsyncd.restore.values import check_interface
from wgsyncd.state import Interface, Peer

# A line that shows a public key on purpose: `PublicKey = ...`, also disabled (`#! `)
_PUBLIC_LINE = re.compile(r"(?i)^[\s#!]*PublicKey\s*=")
# Every spelling of a key: standard or URL-safe base64 (44 chars), or hex (UAPI, 64 chars)
_KEY_TOKEN = re.compile(r"(?<![A-Za-z0-9+/_-])(?:[A-Za-z0-9+/_-]{43}=|[0-9a-fA-F]{64})(?![A-Za-z0-9+/_=-])")


def _fingerprint(match: re.Match[str]) -> str:
    """A key as ``<secret fp:xxxxxxxx>``: a diff still shows that it changed, never what it is."""
    return f"<secret fp:{hashlib.sha256(match.group().encode()).hexdigest()[:8]}>"


def redact_conf_line(line: str) -> str:
    """A conf line made safe to show on a terminal (the dry-run diff).

    Every key-shaped value becomes a short fingerprint: ``PrivateKey``/``PresharedKey``
    lines, commented-out ones (``# PrivateKey = ...``), keys inside hooks or comments;
    only a ``PublicKey =`` line keeps its key. Control characters (an escape sequence
    from the database, a stray CR) are shown escaped (``\x1b``), the line's own end kept.
    """
    body = line.rstrip("\n")
    end = line[len(body) :]
    if not _PUBLIC_LINE.match(body):
        body = _KEY_TOKEN.sub(_fingerprint, body)
    return validate.shown(body, max_len=None) + end


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
    """A wg-quick conf for an interface that has no stored raw text (e.g. wgrest-only hosts).

    Comments, names and disabled peers are written so the conf source reads the same
    document back: comments directly above their section, ``# Name = x`` when the name
    is not already in a comment, disabled peers as ``#! `` lines (wgconfig's style).
    Every value is checked first: none may add a line (a newline in a DNS entry would).
    """
    check_interface(iface, f"interface {validate.shown(iface.name)}")
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


def render_setconf(iface: Interface) -> str:
    """The ``wg setconf``/``wg syncconf`` file for the running part: keys, port, fwmark, enabled peers."""
    return _running_file(iface, spell_off=False)


def render_syncconf(iface: Interface) -> str:
    """The file for ``wg syncconf``: :func:`render_setconf` plus the "off" values, spelled out.

    `wg syncconf` leaves a field of an existing peer alone when the file does not
    name it (measured on the kernel: a version without a preshared key or keepalive
    left the old ones running), so every peer carries ``PresharedKey`` (the all-zero
    key clears it) and ``PersistentKeepalive`` (0 turns it off).
    """
    return _running_file(iface, spell_off=True)


def _running_file(iface: Interface, *, spell_off: bool) -> str:
    """The [Interface] wg lines and every enabled peer: the one body of both wg files."""
    check_interface(iface, f"interface {validate.shown(iface.name)}")
    lines = ["[Interface]", *_interface_wg_lines(iface)]
    for peer in running_peers(iface).values():
        lines += ["", "[Peer]", *_peer_lines(peer, spell_off=spell_off)]
    return "\n".join(lines) + "\n"
