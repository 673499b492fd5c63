"""The conf-file source: /etc/wireguard/*.conf read the way wg-quick and wg read them.

How a conf's text is read (wg-quick's and wg's rules) is wire/conftext.py's; this
module finds the files, reads each as one consistent snapshot, and turns a refused
file into one interface-scoped SourceError (its raw text is still sealed, see
SourceResult.unparsed):

- only ``*.conf`` names wg-quick accepts; a FIFO, a huge file or a file that is not
  regular is refused without blocking or swallowing it;
- a file rewritten while it is read is read again (_read_bytes), never half;
- bash and wg read bytes, so a stray non-UTF-8 byte is read as its Latin-1 character.

wgconfig (the library wgrest v1 uses to edit these files) is the structural
cross-check: a file it cannot parse (``[ Peer ]``, ``#! [Foo]``) gets a warning, not
an error, because wg-quick runs it fine and a backup must not skip a working
interface (sources/confcheck.py). Its values are not used: it splits every value on
commas, cuts hooks at ``#``, is case-sensitive on keys and collapses duplicate public keys.

Sources only read: nothing here writes a file.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable

from wgsyncd.config import ConfConfig
from wgsyncd.sources.confcheck import wgconfig_check
from wgsyncd.state import CONF_NAME_RE, Interface, Secret, Source, SourceError, SourceResult
from wgsyncd.wire import conftext
from wgsyncd.wire.conflines import warn
from wgsyncd.wire.conftext import ConfParseError

__all__ = ["ConfParseError", "SourceResult", "parse_conf", "read"]

log = logging.getLogger(__name__)

# a conf with 10,000 peers is about 1.5 MB; anything far larger is not a conf file
MAX_CONF_BYTES = 64 * 1024 * 1024


def parse_conf(text: str, path: str) -> Interface:
    """wire/conftext.py's parse_conf, then the wgconfig cross-check (a warning, never an error).

    Pure (no I/O). Raises ConfParseError naming ``path:line Field`` for anything
    wg-quick or wg would refuse; never returns a half-parsed interface.
    """
    iface = conftext.parse_conf(text, path)
    wgconfig_check(text, path, iface.peers)
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


_CHUNK = 64 * 1024


def _read_once(path: str, keep: bool = True) -> tuple[bytes, bytes, tuple[int, ...] | None]:
    """One read of the file: (its bytes, or b"" unless ``keep``; their sha256; its identity if it
    stayed the same file, unchanged, throughout)."""
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
            # one byte more than its size: a file that grew is seen (unstable, read again) without
            # a MAX_CONF_BYTES buffer for every read (a 64 MiB allocation for a 1.5 MB file)
            if keep:  # one buffer of the file's size, hashed once
                data = fh.read(before.st_size + 1)
                digest, length = hashlib.sha256(data), len(data)
            else:  # hashed as it comes, never whole in memory (an unchanged file)
                data, digest, length, left = b"", hashlib.sha256(), 0, before.st_size + 1
                while left > 0 and (chunk := fh.read(min(_CHUNK, left))):
                    digest.update(chunk)
                    length, left = length + len(chunk), left - len(chunk)
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
        and length == after.st_size
    )
    return data, digest.digest(), _identity(after) if stable else None


def _settle_pause(ident: tuple[int, ...]) -> float:
    """Seconds until the file's last change is SETTLE_NS old (at most SETTLE_NS: a future mtime)."""
    return min(SETTLE_NS, max(0, max(ident[3], ident[4]) + SETTLE_NS - time.time_ns())) / 1e9


def _read_bytes(path: str, keep: bool = True) -> tuple[bytes, bytes]:
    """The whole file as one consistent snapshot, never half of an in-place rewrite: (its bytes,
    or b"" unless ``keep``; their sha256).

    A file whose size, mtime, ctime or inode changed during the read (or whose
    length differs from its size) is read again, up to READ_ATTEMPTS times. A file
    modified within SETTLE_NS must also read the same after a pause: a writer stopped
    between truncate and write leaves a half file that is stable for a moment.
    """
    settling: tuple[int, ...] | None = None
    for attempt in range(1, READ_ATTEMPTS + 1):
        data, digest, ident = _read_once(path, keep)
        if ident is not None and (ident == settling or time.time_ns() - max(ident[3], ident[4]) >= SETTLE_NS):
            return data, digest
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


def _decode(data: bytes, path: str, *, quiet: bool = False) -> str:
    """A conf file's bytes as text, as wg-quick runs them (warning once per parse unless ``quiet``).

    bash and wg read bytes, so a file that is not UTF-8 (a Latin-1 comment) runs; it is
    read here with each stray byte as its Latin-1 character, and a warning: the stored
    text is UTF-8, so that byte is the one thing a restore would not give back as it was.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if not quiet:
            lineno = data[: exc.start].count(b"\n") + 1
            warn(path, lineno, "encoding", "not valid UTF-8 (wg-quick runs it); stray bytes read as Latin-1")
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
        data: bytes | None = None
        try:
            iface = _unchanged(path, seen, parsed)
            if iface is None:
                data, digest = _read_bytes(path)
                iface = parse_conf(_decode(data, path), path)
                parsed[path] = (digest, iface)
        except ConfParseError as exc:
            if exc.lineno is None and not os.path.lexists(path):
                log.debug("%s: vanished while reading the directory", path)
                continue
            result.errors.append(SourceError(Source.CONF, exc.where, exc.message, interface=ifname))
            if data is not None:  # refused, never guessed at; but its text is still backed up
                result.unparsed[ifname] = (path, Secret(_decode(data, path, quiet=True)))
            continue
        result.interfaces[ifname] = iface
    # compare as os.path.join built the keys: "/etc/wireguard/" must match its files too
    here = os.path.dirname(os.path.join(cfg.directory, "x"))
    for stale in [p for p in parsed if os.path.dirname(p) == here and p not in seen]:
        del parsed[stale]
    return result


def _unchanged(path: str, seen: set[str], parsed: dict[str, tuple[bytes, Interface]]) -> Interface | None:
    """The last parse of this path if the file is byte-identical to it, else None (and forgotten).

    ``parsed``: path -> (sha256 of the file's bytes, its parse), the caller's memo. A
    long-running daemon re-reads every file each cycle; an unchanged file (same bytes,
    not merely the same mtime) is hashed as it is read and neither kept, decoded nor
    parsed (at 10,000 peers the read's traced peak 1.7 -> 0.1 MiB); a changed one is read
    again, kept and parsed by the caller, so its warnings, like its parse, come once per
    change. The cached Interface is shared (and sealed by the cycle).
    """
    seen.add(path)
    hit = parsed.pop(path, None)  # back only if the file is still these bytes
    if hit is not None and _read_bytes(path, keep=False)[1] == hit[0]:
        parsed[path] = hit
        return hit[1]
    return None
