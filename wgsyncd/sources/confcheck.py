"""The wgconfig cross-check of a conf file: can wgrest v1 (and other wgconfig users) edit it?

wgconfig 1.2.0 is the library wgrest v1 uses to edit conf files. A file it cannot
parse (``[ Peer ]``, ``#! [Foo]``, a ``PublicKey = a, b``) runs fine under wg-quick,
so it is read and gets one warning naming the line wgconfig stops at. With debug
logging on, wgconfig itself parses the file and its peers and disabled flags are
compared with wg-quick's reading (debug lines); otherwise, for speed (wgconfig takes
~0.1 s on a 10,000-peer file, as much as the whole conf read), the warning comes
from :func:`wgconfig_error`, a statement of exactly when its parser fails, kept
equal to wgconfig by tests/unit/sources/test_confcheck.py.
"""

from __future__ import annotations

import io
import logging
import re

import wgconfig

from wgsyncd.state import Peer

log = logging.getLogger(__name__)

_LINE_RE = re.compile(r"in line (\d+)")
# the lines the fast path looks at: headers and PublicKey lines (wgconfig's key attribute),
# each after a newline (a literal first character lets the regex engine skip ahead)
_FAST_RE = re.compile(r"\n[^\S\n]*(\[[^\n]*|PublicKey[^\S\n]*=[^\n#]*)")
# what the fast path cannot see: '#! ' (removed anywhere by wgconfig), whitespace only
# Python strips, the one attribute that breaks wgconfig's bookkeeping
_SLOW_MARKS = ("#! ", "\x1c", "\x1d", "\x1e", "\x1f", "_index_firstline")


def _section_fails(section: str | None, public_keys: int, firstline: bool) -> bool:
    """wgconfig's close_section raises: a list as a peer's key, or a list as a line index."""
    return section is not None and (firstline or (section != "interface" and public_keys > 1))


def _header_error(line: str, i: int) -> tuple[str | None, str]:
    """(error, section) for a header line as wgconfig reads it."""
    section = line[1:].partition("]")[0].lower()
    if section not in ("interface", "peer"):
        return f"Unsupported section [{section}] in line {i}", section
    return None, section


def _full(text: str) -> str | None:
    """wgconfig's parse_lines, line by line, keeping only what can make it raise."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    section: str | None = None
    keys, firstline = 0, False
    for i, raw in enumerate(lines):
        line = raw.rstrip().replace("#! ", "").strip()
        if not line or line[0] == "#":
            continue
        if line[0] == "[":
            if _section_fails(section, keys, firstline):
                return "section cannot be closed"
            error, section = _header_error(line, i)
            if error:
                return error
            keys, firstline = 0, False
            continue
        attr, _, value = line.partition("=")
        attr, value = attr.strip(), value.partition("#")[0].strip()
        if value.isnumeric():
            try:
                int(value)
            except ValueError as exc:  # a numeric character that is no digit (a fraction, say)
                return str(exc)
        if attr == "PublicKey":
            keys += value.count(",") + 1
        elif attr == "_index_firstline":
            firstline = True
    return "section cannot be closed" if _section_fails(section, keys, firstline) else None


def _fast(text: str) -> str | None:
    """:func:`_full` for ASCII text without ``#! ``: only headers and PublicKey lines matter."""
    section: str | None = None
    keys = 0
    for item in _FAST_RE.findall("\n" + text):
        if item[0] == "[":
            if _section_fails(section, keys, False):
                return "section cannot be closed"
            error, section = _header_error(item.strip(), -1)
            if error:  # rare: find its line number the slow way
                return _full(text)
            keys = 0
        else:
            keys += item.count(",") + 1
    return "section cannot be closed" if _section_fails(section, keys, False) else None


def wgconfig_error(text: str) -> str | None:
    """Why wgconfig 1.2.0 cannot parse ``text`` (its message: ``... in line N``, 0-based), or None."""
    if text.isascii() and not any(mark in text for mark in _SLOW_MARKS):
        return _fast(text)
    return _full(text)


def _compare(text: str, path: str, peers: dict[str, Peer]) -> str | None:
    """wgconfig itself: its error, or None after its peers were compared with ours (debug lines)."""
    wgc = wgconfig.WGConfig()
    wgc.read_from_fileobj(io.StringIO(text, newline="\n"))
    try:
        theirs = wgc.get_peers(keys_only=False, include_disabled=True, include_details=True)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        return str(exc)
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
    return None


def wgconfig_check(text: str, path: str, peers: dict[str, Peer]) -> None:
    """Warn when wgconfig cannot parse the file; advisory only (wg-quick and wg decide what runs)."""
    error = _compare(text, path, peers) if log.isEnabledFor(logging.DEBUG) else wgconfig_error(text)
    if error is None:
        return
    m = _LINE_RE.search(error)
    where = f"{path}:{int(m.group(1)) + 1}" if m else path
    log.warning(
        "%s: wgconfig cannot parse this file (wg-quick can); tools using wgconfig cannot edit it", where
    )
