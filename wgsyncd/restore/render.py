"""Conf texts of a desired interface: wg-quick conf, ``wg setconf`` and ``wg syncconf`` files.

Restore's side of the conf format: each value is checked (restore/values.py) and
the running peers picked (restore/loading.py) before wire/conftext.py, the format's
one home, writes the text. Also the display redaction of conf lines (key values as
fingerprints), which the dry-run diff of conf files uses. The rendered texts hold
key values: write them out or pipe them to ``wg``, never log them.
"""

from __future__ import annotations

import hashlib
import re

from wgsyncd import validate
from wgsyncd.canonical import ZERO_KEY_B64
from wgsyncd.restore.loading import running_peers
from wgsyncd.restore.values import check_interface
from wgsyncd.state import Interface
from wgsyncd.wire import conftext

__all__ = ["ZERO_KEY_B64", "redact_conf_line", "render_conf", "render_setconf", "render_syncconf"]


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


def render_conf(iface: Interface) -> str:
    """A wg-quick conf for an interface that has no stored raw text (e.g. wgrest-only hosts).

    Every value is checked first: none may add a line (a newline in a DNS entry
    would). The text (wire/conftext.py writes it) reads back as the same document.
    """
    check_interface(iface, f"interface {validate.shown(iface.name)}")
    return conftext.render_conf(iface)


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
    return conftext.render_running(iface, list(running_peers(iface).values()), spell_off=spell_off)
