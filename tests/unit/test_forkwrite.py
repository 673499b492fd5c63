"""wgsyncd.forkwrite: a child's answer comes back, its failure is one safe line, it is always reaped."""

from __future__ import annotations

import os
import time

import pytest

from wgsyncd import forkwrite


def _reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_the_childs_answer_comes_back_and_the_child_is_reaped(tmp_path) -> None:
    target = tmp_path / "out"

    def write() -> str:
        target.write_text(str(os.getpid()))
        return "abc123"

    pending = forkwrite.start(write)
    assert pending is not None
    assert forkwrite.wait(pending, 30) == "abc123"
    assert _reaped(pending.pid)
    assert target.read_text() == str(pending.pid) != str(os.getpid())  # written by the child


def test_a_failing_child_answers_its_error_without_the_exception_text() -> None:
    def write() -> str:
        raise ValueError("secret-value-in-a-message")

    pending = forkwrite.start(write)
    assert pending is not None
    with pytest.raises(forkwrite.ChildFailed) as err:
        forkwrite.wait(pending, 30)
    assert str(err.value) == "ValueError" and _reaped(pending.pid)


def test_an_oserror_is_told_by_its_strerror(tmp_path) -> None:
    pending = forkwrite.start(lambda: (tmp_path / "no" / "such").read_text())
    assert pending is not None
    with pytest.raises(forkwrite.ChildFailed, match="No such file or directory"):
        forkwrite.wait(pending, 30)


def test_a_child_that_overruns_is_killed_and_reaped() -> None:
    def write() -> str:
        time.sleep(60)
        return "late"

    pending = forkwrite.start(write)
    assert pending is not None
    t0 = time.monotonic()
    with pytest.raises(forkwrite.ChildFailed, match=r"no answer within 0\.2 s"):
        forkwrite.wait(pending, 0.2)
    assert time.monotonic() - t0 < 30 and _reaped(pending.pid)


def test_an_overrun_says_the_child_was_killed() -> None:
    """The caller cleans what a killed child left behind only when told so."""
    pending = forkwrite.start(lambda: time.sleep(60) or "late")
    assert pending is not None
    with pytest.raises(forkwrite.ChildFailed) as err:
        forkwrite.wait(pending, 0.2)
    assert err.value.killed and _reaped(pending.pid)
    ok = forkwrite.start(lambda: "fine")
    assert ok is not None and forkwrite.wait(ok, 30) == "fine"


def test_a_child_reaped_by_the_system_is_a_child_failure_not_a_crash() -> None:
    """With SIGCHLD ignored the kernel reaps the child: waitpid's ECHILD becomes ChildFailed."""
    import signal

    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        pending = forkwrite.start(lambda: "done")
        assert pending is not None
        with pytest.raises(forkwrite.ChildFailed, match="reaped elsewhere") as err:
            forkwrite.wait(pending, 30)
        assert not err.value.killed
    finally:
        signal.signal(signal.SIGCHLD, old)


def test_a_wait_interrupted_still_kills_and_reaps_the_child(monkeypatch) -> None:
    """An interrupt (Ctrl-C) during the wait must not leave the parent blocked on a hung child."""
    pending = forkwrite.start(lambda: time.sleep(60) or "late")
    assert pending is not None

    class Interrupted(BaseException):
        pass

    class Poll:
        def register(self, fd, mask) -> None:
            pass

        def poll(self, timeout) -> list:
            raise Interrupted

    monkeypatch.setattr(forkwrite.select, "poll", Poll)
    t0 = time.monotonic()
    with pytest.raises(Interrupted):
        forkwrite.wait(pending, 300)
    assert time.monotonic() - t0 < 30 and _reaped(pending.pid)
