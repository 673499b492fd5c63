"""Issue 16 item 5: a conf file rewritten in place while it is read is read again, never half.

A real writer thread rewrites the file in place (truncate + write, same inode, as an
editor or ``wg-quick save`` does). It is driven by events from a hook the reader calls
between its stat and its read, so each interleaving happens exactly, with no sleeps.
Every text handed to the parser is recorded: it must always be a whole version.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.unit.sources.test_conffiles import FULL, A, B, C
from wgsyncd.config import ConfConfig
from wgsyncd.sources import conffiles

OLD = FULL
NEW = FULL.replace("PersistentKeepalive = 25\n", "") + "".join(
    f"\n[Peer]\nPublicKey = {k}\nAllowedIPs = 10.9.0.{i}/32\n" for i, k in enumerate((B, C), 1)
)


class Rewriter:
    """A thread that rewrites one file in place, one step per request; steps are callables."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.steps: list[Callable[[], None]] = []
        self.go = threading.Event()
        self.done = threading.Event()
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            self.go.wait()
            self.go.clear()
            if self.stop:
                return
            if self.steps:
                self.steps.pop(0)()
            self.done.set()

    def step(self, _path: str) -> None:
        """The reader's hook: let the writer do its next step, wait until it is done."""
        self.done.clear()
        self.go.set()
        assert self.done.wait(10), "writer thread stuck"

    def close(self) -> None:
        self.stop = True
        self.go.set()
        self.thread.join(10)

    # the writer's moves, in place on the same inode
    def truncate_and_write(self, data: bytes) -> Callable[[], None]:
        def run() -> None:
            fd = os.open(self.path, os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

        return run

    def append(self, data: bytes) -> Callable[[], None]:
        def run() -> None:
            with open(self.path, "ab") as fh:
                fh.write(data)

        return run


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Rewriter, list[str]]]:
    """wg0.conf holding OLD, a rewriter hooked between stat and read, and every parsed text."""
    path = tmp_path / "wg0.conf"
    path.write_text(OLD)
    os.utime(path, ns=(1, 1))  # an old file: not "just modified"
    writer = Rewriter(path)
    parsed: list[str] = []
    real_parse = conffiles.parse_conf

    def spy(text: str, p: str):  # type: ignore[no-untyped-def]
        parsed.append(text)
        return real_parse(text, p)

    monkeypatch.setattr(conffiles, "parse_conf", spy)
    monkeypatch.setattr(conffiles, "_after_stat", writer.step)
    monkeypatch.setattr(conffiles, "_RETRY_PAUSE_S", 0.0)
    yield path, writer, parsed  # each read() without a memo parses afresh
    writer.close()


def read(path: Path) -> conffiles.SourceResult:
    return conffiles.read(ConfConfig(directory=str(path.parent)))


def test_rewrite_during_the_read_is_read_again_never_half(conf) -> None:
    path, writer, parsed = conf
    data = NEW.encode()
    half = len(data) // 2
    writer.steps = [writer.truncate_and_write(data[:half]), writer.append(data[half:])]
    result = read(path)
    assert not result.errors
    assert list(result.interfaces["wg0"].peers) == [A, B, C]
    assert parsed == [NEW]  # the half text and the old+half mix never reached the parser
    assert not writer.steps


def test_writer_paused_between_truncate_and_write_is_waited_for(conf, monkeypatch) -> None:
    path, writer, parsed = conf
    # whatever the clock says, a read file counts as just modified, and the pause takes no time
    monkeypatch.setattr(conffiles, "SETTLE_NS", 10**15)
    monkeypatch.setattr(conffiles, "_settle_pause", lambda _ident: 0.0)
    data = NEW.encode()
    nothing = lambda: None  # noqa: E731  (the writer is paused for one whole read)
    writer.steps = [writer.truncate_and_write(b""), nothing, writer.append(data)]
    result = read(path)
    assert not result.errors and parsed == [NEW]


def test_a_file_that_never_stops_changing_is_an_error_naming_it(conf) -> None:
    path, writer, parsed = conf
    writer.steps = [writer.append(f"# edit {i}\n".encode()) for i in range(conffiles.READ_ATTEMPTS)]
    result = read(path)
    assert parsed == [] and "wg0" not in result.interfaces
    (err,) = result.errors
    assert err.where == str(path) and err.interface == "wg0"
    assert err.message == f"changed while being read, {conffiles.READ_ATTEMPTS} times in a row"


def test_a_file_replaced_by_rename_during_the_read_is_read_again(conf) -> None:
    path, writer, parsed = conf

    def replace() -> None:
        tmp = path.with_name("wg0.conf.tmp")
        tmp.write_text(NEW)
        os.replace(tmp, path)

    writer.steps = [replace]
    assert not read(path).errors and parsed == [NEW]


# ---------------------------------------------------------------- the memo's hashing pass (unchanged files)


def test_a_rewrite_during_the_hashing_pass_is_read_again_and_parsed_whole(conf) -> None:
    """The memo holds OLD; the file is rewritten in place while its hash is being read."""
    path, writer, parsed = conf
    memo: dict = {}
    conffiles.read(ConfConfig(directory=str(path.parent)), None, memo)  # no steps: OLD, parsed once
    data = NEW.encode()
    half = len(data) // 2
    writer.steps = [writer.truncate_and_write(data[:half]), writer.append(data[half:])]
    result = conffiles.read(ConfConfig(directory=str(path.parent)), None, memo)
    assert not result.errors and parsed == [OLD, NEW]
    assert memo[str(path)][0] == hashlib.sha256(data).digest()


def test_a_change_between_the_hashing_pass_and_the_keeping_read_keeps_what_was_read(conf) -> None:
    """Changed (a miss), then back to OLD before the keeping read: OLD is parsed and remembered."""
    path, writer, parsed = conf
    memo: dict = {}
    conffiles.read(ConfConfig(directory=str(path.parent)), None, memo)
    path.write_text(OLD + "\n# changed\n")
    os.utime(path, ns=(1, 1))
    nothing = lambda: None  # noqa: E731  (the hashing pass sees the changed file)
    writer.steps = [nothing, writer.truncate_and_write(OLD.encode())]
    result = conffiles.read(ConfConfig(directory=str(path.parent)), None, memo)
    assert not result.errors, result.errors
    assert parsed[-1] == OLD and memo[str(path)][0] == hashlib.sha256(OLD.encode()).digest()


def test_a_file_that_stops_being_readable_leaves_no_old_parse_in_the_memo(conf) -> None:
    """The memo (and the sync cache written from it) must not keep a key the file no longer holds."""
    path, _writer, _parsed = conf
    memo: dict = {}
    conffiles.read(ConfConfig(directory=str(path.parent)), None, memo)
    assert str(path) in memo
    path.unlink()
    os.mkfifo(path)
    result = conffiles.read(ConfConfig(directory=str(path.parent)), None, memo)
    assert [e.message for e in result.errors] == ["not a regular file"]
    assert memo == {}
