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
