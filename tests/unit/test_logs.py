"""wgsyncd.logs against a real datagram socket standing in for journald, and real streams."""

from __future__ import annotations

import array
import base64
import fcntl
import io
import json
import logging
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from wgsyncd import logs
from wgsyncd.state import Secret

PRIVATE = base64.b64encode(bytes(range(32))).decode()
PUBLIC = base64.b64encode(bytes(range(100, 132))).decode()


def parse_journal(data: bytes) -> dict[str, str]:
    """Decode journald's native format (both the KEY=VALUE and the length-prefixed form)."""
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        nl = data.index(b"\n", pos)
        line = data[pos:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            pos = nl + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", data[nl + 1 : nl + 9])
            value = data[nl + 9 : nl + 9 + size]
            assert data[nl + 9 + size : nl + 10 + size] == b"\n", "binary field not closed by a newline"
            pos = nl + 10 + size
        fields[key.decode()] = value.decode()
    return fields


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[socket.socket]:
    """A bound AF_UNIX datagram socket: a stand-in for /run/systemd/journal/socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "journal.socket"))
    sock.settimeout(5)
    yield sock
    sock.close()


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    """Leave the root logger, the redactor and the context as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)
    logs.redactor().clear()
    logs.set_context(wgsyncd_host=None, sync_id=None)


def journal_setup(journal: socket.socket) -> None:
    """Point logs.setup at the stand-in journal."""
    logs.setup("debug", journal=True, journal_socket=journal.getsockname())


def test_encode_plain_and_binary_safe_fields() -> None:
    data = logs.encode_journal_fields([("MESSAGE", "one line"), ("MULTI", "a\nb=c\n")])
    assert data.startswith(b"MESSAGE=one line\nMULTI\n")
    assert struct.unpack("<Q", data[len(b"MESSAGE=one line\nMULTI\n") :][:8]) == (6,)
    assert parse_journal(data) == {"MESSAGE": "one line", "MULTI": "a\nb=c\n"}


@pytest.mark.parametrize("name", ["message", "_PID", "1ABC", "WG-PEER", ""])
def test_encode_rejects_invalid_field_names(name: str) -> None:
    with pytest.raises(ValueError, match="journal field name"):
        logs.encode_journal_fields([(name, "x")])


def test_structured_fields_reach_the_journal_socket(journal: socket.socket) -> None:
    journal_setup(journal)
    logs.set_context(wgsyncd_host="host-17")
    log = logging.getLogger("wgsyncd.test")
    with logs.context(sync_id="abc123"):
        log.warning("peer changed", extra={"wg_interface": "wg0", "wg_peer": PUBLIC})
    fields = parse_journal(journal.recv(65536))
    assert fields["MESSAGE"] == "peer changed"
    assert fields["PRIORITY"] == "4"
    assert fields["SYSLOG_IDENTIFIER"] == "wgsyncd"
    assert fields["WGSYNCD_HOST"] == "host-17"
    assert fields["WG_INTERFACE"] == "wg0"
    assert fields["WG_PEER"] == PUBLIC
    assert fields["SYNC_ID"] == "abc123"
    assert fields["CODE_FUNC"] == "test_structured_fields_reach_the_journal_socket"
    assert fields["WGSYNCD_LOGGER"] == "wgsyncd.test"
    # the context block ended: the next record has no SYNC_ID, still the host
    log.info("after")
    after = parse_journal(journal.recv(65536))
    assert "SYNC_ID" not in after
    assert after["PRIORITY"] == "6"
    assert after["WGSYNCD_HOST"] == "host-17"


def test_traceback_travels_in_the_binary_safe_form(journal: socket.socket) -> None:
    journal_setup(journal)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("wgsyncd.test").exception("cycle crashed")
    raw = journal.recv(65536)
    assert b"MESSAGE\n" in raw  # length-prefixed, because the traceback has newlines
    fields = parse_journal(raw)
    assert fields["MESSAGE"].startswith("cycle crashed\nTraceback")
    assert "RuntimeError: boom" in fields["MESSAGE"]
    assert fields["PRIORITY"] == "3"


def test_oversized_entry_goes_through_a_sealed_memfd(journal: socket.socket) -> None:
    journal_setup(journal)
    journal.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    big = "x" * (4 << 20)  # far over any unix datagram limit
    logging.getLogger("wgsyncd.test").info("%s", big)
    msg, anc, _flags, _addr = journal.recvmsg(1024, socket.CMSG_SPACE(4))
    assert msg == b""
    assert anc and anc[0][1] == socket.SCM_RIGHTS
    fd = array.array("i", anc[0][2][:4])[0]
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SEAL
        size = os.fstat(fd).st_size
        fields = parse_journal(os.pread(fd, size, 0))
    finally:
        os.close(fd)
    message = fields.get("MESSAGE", "")
    assert len(message) == len(big) and set(message) == {"x"}, "MESSAGE not carried whole"
    assert fields["SYSLOG_IDENTIFIER"] == "wgsyncd"


def test_missing_journal_falls_back_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gone.socket"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    logs.setup("info", journal=True, journal_socket=str(path))
    sock.close()
    path.unlink()  # the journal went away after setup
    logging.getLogger("wgsyncd.test").error("still visible", extra={"wg_interface": "wg1"})
    err = capsys.readouterr().err
    assert "still visible" in err and "wg_interface=wg1" in err


def test_redaction_of_registered_secrets_everywhere(journal: socket.socket) -> None:
    journal_setup(journal)
    logs.register_secret(Secret(PRIVATE))
    logs.register_secret(Secret("hunter2-db-password"))
    logs.register_secret(Secret("abc"))  # too short to redact safely: ignored
    log = logging.getLogger("wgsyncd.test")
    try:
        raise ValueError(f"bad key {PRIVATE}")
    except ValueError:
        log.exception(
            "key %s and public %s, dsn password=hunter2-db-password, abc stays",
            PRIVATE,
            PUBLIC,
            extra={"wg_peer": PRIVATE},
        )
    raw = journal.recv(65536)
    assert PRIVATE.encode() not in raw
    assert b"hunter2-db-password" not in raw
    fields = parse_journal(raw)
    assert fields["MESSAGE"].startswith(f"key <redacted> and public {PUBLIC}, dsn password=<redacted>")
    assert "abc stays" in fields["MESSAGE"]
    assert "ValueError: bad key <redacted>" in fields["MESSAGE"]
    assert fields["WG_PEER"] == "<redacted>"


def test_redaction_applies_to_plain_and_json_streams() -> None:
    logs.register_secret(Secret(PRIVATE))
    for json_logs in (False, True):
        stream = io.StringIO()
        logs.setup("info", json_logs=json_logs, journal=False, stream=stream)
        logging.getLogger("wgsyncd.test").info("private %s", PRIVATE)
        assert PRIVATE not in stream.getvalue()
        assert "<redacted>" in stream.getvalue()


def test_plain_lines_are_readable_with_fields() -> None:
    stream = io.StringIO()
    logs.setup("info", journal=False, stream=stream)
    log = logging.getLogger("wgsyncd.test")
    log.debug("hidden at info")
    log.warning("peer gone", extra={"wg_interface": "wg0", "sync_id": "s1"})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("WARNING peer gone [wg_interface=wg0 sync_id=s1]")


def test_json_logs_one_object_per_line() -> None:
    stream = io.StringIO()
    logs.setup("debug", json_logs=True, journal=True, stream=stream)  # JSON wins over the journal
    logs.set_context(wgsyncd_host="h1")
    log = logging.getLogger("wgsyncd.test")
    log.info("first", extra={"wg_interface": "wg0"})
    log.error("second\nwith newline")
    objs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [o["message"] for o in objs] == ["first", "second\nwith newline"]
    assert objs[0]["wg_interface"] == "wg0" and objs[0]["wgsyncd_host"] == "h1"
    assert objs[1]["level"] == "error"


def test_setup_twice_keeps_one_handler() -> None:
    stream = io.StringIO()
    logs.setup("info", journal=False, stream=stream)
    logs.setup("info", journal=False, stream=stream)
    logging.getLogger("wgsyncd.test").info("once")
    assert stream.getvalue().count("once") == 1


def test_stderr_is_journal_matches_device_and_inode(tmp_path: Path) -> None:
    with open(tmp_path / "stream", "w") as fh:
        st = os.fstat(fh.fileno())
        assert logs.stderr_is_journal(fh, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        # inherited by a child whose stderr was redirected elsewhere: not the journal
        assert not logs.stderr_is_journal(fh, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not logs.stderr_is_journal(fh, {"JOURNAL_STREAM": "garbage"})
        assert not logs.stderr_is_journal(fh, {})


def test_unknown_level_and_context_field_are_rejected() -> None:
    with pytest.raises(ValueError, match="log level"):
        logs.setup("verbose")
    with pytest.raises(ValueError, match="unknown field"):
        logs.set_context(password="x")
