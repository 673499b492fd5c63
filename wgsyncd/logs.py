"""Logging: journald's native protocol under systemd, readable stderr lines, or JSON.

Under systemd an operator reads ``journalctl -u wgsyncd -o json`` and filters on
fields (WG_INTERFACE=wg0, SYNC_ID=...), so records go to the journal as structured
entries over its datagram socket -- spoken here directly, so the package needs no
python-systemd. Elsewhere a person reads stderr, and containers want one JSON
object per line. Every handler carries a redaction filter as the last line of
defence: a registered secret never leaves the process in a log record.

Callers add fields with ``extra``::

    log.info("peer added", extra={"wg_interface": "wg0", "wg_peer": public_key})
"""

from __future__ import annotations

import array
import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import struct
import sys
import traceback
from collections.abc import Iterator
from typing import Any, TextIO

from wgsyncd.state import Secret

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_IDENTIFIER = "wgsyncd"
REDACTED = "<redacted>"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

# extra={...} keys callers may pass -> journal field names
EXTRA_FIELDS = {
    "wgsyncd_host": "WGSYNCD_HOST",
    "wg_interface": "WG_INTERFACE",
    "wg_peer": "WG_PEER",  # a PUBLIC key only
    "sync_id": "SYNC_ID",
    "sync_status": "WGSYNCD_SYNC_STATUS",
    "wg_source": "WGSYNCD_SOURCE",
}
_FIELD_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_B64_KEY = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{43}=(?![A-Za-z0-9+/=])")
_MIN_LITERAL_SECRET = 6  # shorter registered secrets would redact ordinary words


def _priority(levelno: int) -> int:
    """syslog priority for a logging level, as journald expects in PRIORITY=."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class Redactor(logging.Filter):
    """Replaces registered secrets in every record, whatever the caller forgot.

    WireGuard keys are matched as 44-char base64 words and compared by hash, so
    a public key (not registered) stays readable while a private key does not.
    Longer free-form secrets (passwords, tokens) are replaced as literals.
    """

    def __init__(self) -> None:
        super().__init__()
        self._key_hashes: set[str] = set()
        self._literals: list[Secret] = []

    def register(self, secret: Secret | None) -> None:
        """Remember a secret so it is redacted from now on (None and empty are ignored)."""
        if not secret:
            return
        value = secret.reveal()
        if _B64_KEY.fullmatch(value):
            self._key_hashes.add(hashlib.sha256(value.encode()).hexdigest())
        elif len(value) >= _MIN_LITERAL_SECRET and all(s.reveal() != value for s in self._literals):
            self._literals.append(secret)

    def clear(self) -> None:
        """Forget every secret (tests, and a reload that drops credentials)."""
        self._key_hashes.clear()
        self._literals.clear()

    def redact(self, text: str) -> str:
        """``text`` with every registered secret replaced by <redacted>."""
        if self._key_hashes:
            text = _B64_KEY.sub(self._replace_key, text)
        for secret in self._literals:
            value = secret.reveal()
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def _replace_key(self, match: re.Match[str]) -> str:
        """Replace one base64 word if it is a registered key."""
        word = match.group(0)
        return REDACTED if hashlib.sha256(word.encode()).hexdigest() in self._key_hashes else word

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the message, the traceback and the extra fields of ``record`` in place."""
        if not (self._key_hashes or self._literals):
            return True
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        for attr in EXTRA_FIELDS:
            value = getattr(record, attr, None)
            if isinstance(value, str):
                setattr(record, attr, self.redact(value))
        return True


_REDACTOR = Redactor()
_CONTEXT: dict[str, str] = {}


def redactor() -> Redactor:
    """The process-wide redactor every handler set up here uses."""
    return _REDACTOR


def register_secret(secret: Secret | None) -> None:
    """Register a secret with the process-wide redactor (see :class:`Redactor`)."""
    _REDACTOR.register(secret)


def set_context(**fields: str | None) -> None:
    """Set fields every later record carries (e.g. wgsyncd_host); None removes one."""
    for key, value in fields.items():
        if key not in EXTRA_FIELDS:
            raise ValueError(f"logs.set_context: unknown field {key}")
        if value is None:
            _CONTEXT.pop(key, None)
        else:
            _CONTEXT[key] = value


@contextlib.contextmanager
def context(**fields: str) -> Iterator[None]:
    """Fields for the records inside the block (e.g. sync_id of one cycle)."""
    before = dict(_CONTEXT)
    set_context(**fields)
    try:
        yield
    finally:
        _CONTEXT.clear()
        _CONTEXT.update(before)


class _ContextFilter(logging.Filter):
    """Adds the context fields a record does not set itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Fill missing extra fields from the context."""
        for key, value in _CONTEXT.items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


def _extras(record: logging.LogRecord) -> dict[str, str]:
    """The known extra fields a record carries, by their extra= name."""
    out = {}
    for key in EXTRA_FIELDS:
        value = getattr(record, key, None)
        if value is not None:
            out[key] = str(value)
    return out


def _message_with_traceback(record: logging.LogRecord) -> str:
    """The message plus its (already redacted) traceback, as one text."""
    message = record.getMessage()
    if record.exc_info and not record.exc_text:
        record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    if record.exc_text:
        message = f"{message}\n{record.exc_text}"
    return message


def encode_journal_fields(fields: list[tuple[str, str]]) -> bytes:
    """Serialise fields in journald's native format.

    KEY=VALUE lines; a value containing a newline uses the binary-safe form
    KEY\\n<64-bit little-endian length><value>\\n. Bad field names are rejected
    here so a typo cannot make journald drop the whole entry.
    """
    out = bytearray()
    for name, value in fields:
        if not _FIELD_NAME.match(name):
            raise ValueError(f"journal field name {name!r} is not valid")
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Sends each record to journald as one structured entry (native protocol)."""

    def __init__(self, socket_path: str = JOURNAL_SOCKET, identifier: str = SYSLOG_IDENTIFIER) -> None:
        super().__init__()
        self.socket_path = socket_path
        self.identifier = identifier
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._fallback = logging.StreamHandler(sys.stderr)
        self._fallback.setFormatter(PlainFormatter())

    def fields(self, record: logging.LogRecord) -> list[tuple[str, str]]:
        """The journal fields of one record (MESSAGE first, then the rest)."""
        fields = [
            ("MESSAGE", _message_with_traceback(record)),
            ("PRIORITY", str(_priority(record.levelno))),
            ("SYSLOG_IDENTIFIER", self.identifier),
            ("WGSYNCD_LOGGER", record.name),
            ("CODE_FILE", record.pathname),
            ("CODE_LINE", str(record.lineno)),
            ("CODE_FUNC", record.funcName),
        ]
        fields += [(EXTRA_FIELDS[k], v) for k, v in _extras(record).items()]
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        """Send the entry; a journal that is gone falls back to a stderr line, never raises."""
        try:
            payload = encode_journal_fields(self.fields(record))
            self._send(payload)
        except OSError:
            self._fallback.handle(record)
        except Exception:
            self.handleError(record)

    def _send(self, payload: bytes) -> None:
        """One datagram; entries too big for a datagram go in a sealed memfd (journald's way)."""
        try:
            self._sock.sendto(payload, self.socket_path)
        except OSError as exc:
            if exc.errno not in (90, 105):  # EMSGSIZE, ENOBUFS
                raise
            self._send_memfd(payload)

    def _send_memfd(self, payload: bytes) -> None:
        """Pass a sealed memfd holding the entry over SCM_RIGHTS."""
        fd = os.memfd_create("wgsyncd-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, payload)
            os.lseek(fd, 0, os.SEEK_SET)  # the receiver shares this file offset
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())]
            self._sock.sendmsg([], rights, 0, self.socket_path)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()
        super().close()


class PlainFormatter(logging.Formatter):
    """``2025-01-01 12:00:00 INFO    message [wg_interface=wg0 sync_id=...]`` for people."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        """The line, with the extra fields appended as key=value."""
        line = super().format(record)
        extras = {k: v for k, v in _extras(record).items() if k != "wgsyncd_host"}
        if extras:
            head, sep, tail = line.partition("\n")
            line = head + " [" + " ".join(f"{k}={v}" for k, v in extras.items()) + "]" + sep + tail
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for container log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object on one line."""
        obj: dict[str, Any] = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        obj.update(_extras(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            obj["exception"] = record.exc_text
        return json.dumps(obj, ensure_ascii=False)


def stderr_is_journal(stream: TextIO | None = None, environ: dict[str, str] | None = None) -> bool:
    """True when systemd connected our stderr to the journal (JOURNAL_STREAM=dev:ino matches).

    The variable is inherited by children whose stderr was redirected, so it only
    counts when the device and inode really are stderr's.
    """
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


_INSTALLED = "_wgsyncd_handler"


def setup(
    level: str,
    json_logs: bool = False,
    *,
    journal: bool | None = None,
    journal_socket: str = JOURNAL_SOCKET,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Configure the root logger once per process; calling again replaces our handler.

    ``journal``: True forces the journal socket (when it exists), False forbids
    it, None means "when stderr is the journal". ``json_logs`` wins over both:
    a container's collector wants JSON even if a journal is around.
    """
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
    use_journal = journal if journal is not None else stderr_is_journal(stream)
    handler: logging.Handler
    if not json_logs and use_journal and os.path.exists(journal_socket):
        handler = JournalHandler(journal_socket)
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonFormatter() if json_logs else PlainFormatter())
    handler.addFilter(_ContextFilter())
    handler.addFilter(_REDACTOR)  # last: sees the fields the context filter added
    setattr(handler, _INSTALLED, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _INSTALLED, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    return handler


def set_level(level: str) -> None:
    """Change the level after a config reload."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
    logging.getLogger().setLevel(LEVELS[level])
