"""The lines of a wg-quick conf, read the way wg-quick (bash ``parse_options``) reads them.

Step one of reading a conf (wire/conftext.py has the whole story): each line is
classified with wg-quick's rules and placed in its section, with the comments that
belong to it. Values are not read here (wire/conffields.py does that).

- a comment starts at the first ``#`` anywhere in a line, hooks included;
- ``key = value`` splits at the first ``=``; keys and section headers are
  case-insensitive (ASCII only); the last line may lack its newline;
- a line that is not ``[Interface]`` or ``[Peer]`` and starts with ``[`` is an error;
- ``#! `` lines are wgconfig's disabled peers: to wg-quick only comments.
"""

from __future__ import annotations

import contextvars
import logging
import re
from dataclasses import dataclass, field

from wgsyncd import validate
from wgsyncd.wire import confvalues as cv

_log = logging.getLogger(__name__)
# set while text is parsed again for another purpose (restore reading a stored conf):
# its warnings were given when the host read the file, and would repeat database text
QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("wgsyncd_conf_quiet", default=False)

# [Interface] keys wg-quick consumes itself (matched on the trimmed key, as bash does)
WGQUICK_KEYS = {
    k.lower(): k
    for k in ("Address", "DNS", "MTU", "Table", "PreUp", "PostUp", "PreDown", "PostDown", "SaveConfig")
}
# keys passed to `wg`, which drops all whitespace first: "Listen Port" is ListenPort to wg
WG_INTERFACE_KEYS = {k.lower(): k for k in ("PrivateKey", "ListenPort", "FwMark")}
PEER_KEYS = {
    k.lower(): k for k in ("PublicKey", "PresharedKey", "AllowedIPs", "Endpoint", "PersistentKeepalive")
}
_SAFE_WORD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_ -]{0,23}$")
_SAFE_HEADER_RE = re.compile(r"^\[[A-Za-z0-9_ -]{0,20}\]$")
_SECRET_IN_COMMENT_RE = re.compile(r"(?i)((?:private|pre\s*shared)\s*key\s*[=:]\s*)\S+")
_BARE_KEY_RE = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=(?![A-Za-z0-9+/=])")
_KEYISH_RE = re.compile(r"(?i)key|[A-Za-z0-9+/]{42}")  # what either redaction above needs to see
_END_MARK_RE = re.compile(r"(?i)^#{2,}\s*end\b")
_NAME_KEY_RE = re.compile(r"(?i)^#+\s*name\s*[=:]\s*(.*?)\s*$")
_SETTING_RE = re.compile(r"^[A-Za-z][A-Za-z ]*=|<redacted>")  # "PrivateKey = ..." commented out: not a name


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
class Line:
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
class Block:
    """One [Interface] or [Peer] section (or a disabled ``#! [Peer]`` block)."""

    kind: str  # interface | peer
    header_no: int
    disabled: bool = False
    kvs: list[Line] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    above: list[str] = field(default_factory=list)  # the comment run directly above the header
    wgquick: bool = True  # wg-quick consumes its Address/DNS/... (header written exactly)


def safe_word(text: str, fallback: str) -> str:
    """A key or header as written, if it cannot be (part of) a key; else a placeholder.

    A pasted key line ``kP3...w=`` splits into a "key" that is a private key minus
    its padding, so only short word-like names are ever echoed in an error.
    """
    return text if _SAFE_WORD_RE.match(text) else fallback


def redact_comment(text: str) -> str:
    """Hide commented-out key material: comments are stored in clear, conf_text is not.

    A value labelled PrivateKey/PresharedKey is always hidden; a bare 32-byte base64
    key is hidden unless the comment says it is a public key (the raw text keeps both).
    """
    hidden = validate.without_unshown(text)
    if hidden is not None and _redacted(hidden) != hidden:
        return _redacted(hidden)  # a key split by invisible or control characters: they go too
    return _redacted(text)


def _redacted(text: str) -> str:
    """redact_comment's two patterns over ``text`` as it is."""
    if not _KEYISH_RE.search(text):  # most comments: neither pattern can match
        return text
    text = _SECRET_IN_COMMENT_RE.sub(r"\1<redacted>", text)
    if "public" not in text.lower():
        text = _BARE_KEY_RE.sub("<redacted>", text)
    return text


def split_lines(text: str) -> list[str]:
    """Lines as bash ``read -r`` sees them: split on LF only, last line may lack one."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _classify_plain(no: int, s: str) -> Line:
    """Classify an already stripped line with wg-quick's rules (comment at first ``#``).

    Whitespace and case are ASCII only, as bash's ``[[:space:]]``/nocasematch and wg's
    ``isspace``/``strcasecmp`` treat these keys: a no-break space is not trimmed and the
    Kelvin sign is not ``k``. A line without ``=`` keeps its text as key and value:
    wg-quick's ``${stripped#*=}`` is then the whole line (a bare ``DNS`` line is DNS "DNS").
    """
    if not s:
        return Line(no, "blank")
    code, hash_, rest = s.partition("#")
    code = cv.strip(code)
    if not code:
        return Line(no, "comment", False, "", "", "", s)
    inline = hash_ + rest
    key, eq, value = code.partition("=")
    key = cv.strip(key)
    if key.startswith("["):
        wgquick = cv.lower(key) == "[interface]"
        return Line(no, "header", False, cv.lower(cv.nospace(code)), code, "", inline, wgquick)
    if not eq:
        return Line(no, "noeq", False, cv.lower(code), code, code, inline)
    return Line(no, "kv", False, cv.lower(key), key, cv.strip(value), inline)


def classify(no: int, line: str) -> Line:
    """Classify one raw line; ``#! `` lines (wgconfig's disabled peers) are classified inside."""
    s = cv.strip(line)
    if s[:2] == "#!" and (len(s) == 2 or s[2] == " "):
        inner = _classify_plain(no, cv.strip(s[3:]))
        inner.disabled = True
        if inner.kind == "comment":
            inner.comment = cv.strip(s[3:])
        return inner
    return _classify_plain(no, s)


class Builder:
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
        self.blocks: list[Block] = []
        self.preamble: list[str] = []
        self.owner: Block | None = None
        self.enabled: Block | None = None
        self.disabled: Block | None = None
        self.pending: list[str] = []

    def _flush(self) -> None:
        """Give the pending comment run to the current section (or the preamble)."""
        if self.pending:
            (self.owner.comments if self.owner else self.preamble).extend(self.pending)
            self.pending = []

    def _open(self, kind: str, line: Line) -> Block:
        """Start a section; the comment run right above it is its own."""
        keep = 0
        while keep < len(self.pending) and _END_MARK_RE.match(self.pending[keep]):
            keep += 1
        if keep:
            (self.owner.comments if self.owner else self.preamble).extend(self.pending[:keep])
        above = self.pending[keep:] if keep else self.pending
        block = Block(kind, line.no, line.disabled, [], list(above), above, line.wgquick)
        self.pending = []
        if line.comment:
            block.comments.append(redact_comment(line.comment))
        self.blocks.append(block)
        self.owner = block
        return block

    def _as_comment(self, raw: str) -> None:
        """Keep a line wg-quick sees as a comment (a stray ``#! `` line) as a comment."""
        self.pending.append(redact_comment(cv.strip(raw)))

    def add(self, line: Line, raw: str) -> None:
        """Place one classified line."""
        kind = line.kind
        if kind == "kv" and not line.disabled:
            self._key_line(line)
        elif kind == "blank":
            self._flush()
        elif kind == "comment":
            self.pending.append(redact_comment(line.comment))
        elif kind == "header":
            self._header(line, raw)
        elif line.disabled:
            if kind == "kv" and self.disabled is not None:
                self._flush()
                self.disabled.kvs.append(line)
                self.owner = self.disabled
                if line.comment:
                    self.disabled.comments.append(redact_comment(line.comment))
            else:
                self._as_comment(raw)
        else:
            self._key_line(line)

    def _header(self, line: Line, raw: str) -> None:
        """An enabled header opens a section; a ``#! [Peer]`` opens a disabled one."""
        if line.key not in ("[interface]", "[peer]"):
            if line.disabled:
                self._as_comment(raw)
                return
            name = line.raw_key if _SAFE_HEADER_RE.match(line.raw_key) else "header"
            raise ConfParseError(
                self.path, line.no, name, "unknown section (wg-quick knows [Interface] and [Peer])"
            )
        kind = line.key[1:-1]
        if line.disabled:
            if kind != "peer":  # only peers can be disabled; a `#! [Interface]` is a comment
                self._as_comment(raw)
                return
            self.disabled = self._open(kind, line)
        else:
            self.enabled = self._open(kind, line)
            self.disabled = None

    def _key_line(self, line: Line) -> None:
        """An enabled ``key = value`` (or a line without ``=``) in the current section."""
        section = self.enabled
        if section is None:
            bare = cv.nospace(line.key)
            known = WGQUICK_KEYS.get(line.key) or WG_INTERFACE_KEYS.get(bare) or PEER_KEYS.get(bare)
            raise ConfParseError(
                self.path, line.no, known or "line", "key before any [Interface] or [Peer] section"
            )
        if line.kind == "noeq":
            self._noeq(section, line)
        if self.pending:
            self._flush()
        self.disabled = None
        section.kvs.append(line)
        self.owner = section
        if line.comment:
            section.comments.append(redact_comment(line.comment))

    def _noeq(self, section: Block, line: Line) -> None:
        """A line without ``=``: wg-quick reads a bare own key's name as its value; else an error."""
        if section.kind == "interface" and section.wgquick and line.key in WGQUICK_KEYS:
            # wg-quick reads the bare word as the value (`DNS` alone is the search domain "DNS")
            warn(
                self.path,
                line.no,
                WGQUICK_KEYS[line.key],
                "line has no '='; wg-quick reads its own name as the value",
            )
            line.kind = "kv"
            return
        raise ConfParseError(
            self.path, line.no, f"[{section.kind.capitalize()}]", "line has no '=' (expected Key = Value)"
        )

    def read(self, text: str) -> None:
        """Classify and place every line of ``text``.

        The common lines (blank, comment, ``[Peer]``, ``Key = value`` without ``#``)
        take a short way that gives what :func:`classify` and :meth:`add` give: 10,000
        peers are 60,000 lines, and this loop is most of the time a conf read takes.
        """
        space, lower = cv.ASCII_SPACE, cv.lower
        # raw key -> (the one str for it, its lower case): 60,000 lines have a handful of
        # distinct keys, so neither is computed nor held again per line (~3.6 MB at 10,000 peers)
        keys: dict[str, tuple[str, str]] = {}
        for no, raw in enumerate(split_lines(text), 1):
            s = raw.strip(space)
            if not s:
                self._flush()
            elif "#" not in s and s[0] != "[":
                key, eq, value = s.partition("=")
                if not eq:
                    self.add(classify(no, raw), raw)
                    continue
                known = keys.get(key)
                if known is None:
                    bare = key.rstrip(space)  # s is stripped: no leading space, and it cannot start with "["
                    known = keys[key] = (bare, lower(bare))
                line = Line(no, "kv", False, known[1], known[0], value.strip(space), "")
                section = self.enabled
                if section is None or self.pending:
                    self._key_line(line)
                else:  # _key_line's work for a line without comment in a section, no comments pending
                    self.disabled = None
                    section.kvs.append(line)
                    self.owner = section
            elif s[0] == "#" and s != "#!" and not s.startswith("#! "):
                self.pending.append(redact_comment(s))
            elif s[0] == "[" and "#" not in s and "=" not in s:
                wgquick = lower(s) == "[interface]"
                self._header(Line(no, "header", False, lower(cv.nospace(s)), s, "", "", wgquick), raw)
            else:
                self.add(classify(no, raw), raw)

    def finish(self) -> None:
        """Attach the comments at the end of the file."""
        self._flush()


def read_blocks(text: str, path: str) -> Builder:
    """Every line of ``text`` classified and placed: the blocks, and the comments before them."""
    builder = Builder(path)
    builder.read(text)
    builder.finish()
    return builder


def peer_name(block: Block) -> str | None:
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


def warn(path: str, lineno: int | None, field_name: str, message: str) -> None:
    """A file wg-quick runs but a human should look at: one line naming file, line, field."""
    if QUIET.get():
        return
    where = path if lineno is None else f"{path}:{lineno} {field_name}"
    _log.warning("%s: %s", where, message)
