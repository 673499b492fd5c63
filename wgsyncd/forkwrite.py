"""A file written by a forked child while this process goes on (the one-shot sync's memo file).

Why: after a first sync of 10,000 peers the timer-mode memo (wgsyncd/synccache.py) is
some 40,000 objects to pickle, 0.25-0.5 s of CPU, while the same process then spends
about as long mostly waiting for PostgreSQL to take its rows. The memo is final once
the sources are read and merged, so a child forked at that moment holds an exact
copy-on-write snapshot of it and writes the file on the other core while the parent
writes to the database; the parent collects the child's answer after its commit.
Measured at 10,000 peers (six A/B pairs, the parent's CPU time): the save after the
commit 0.24-0.35 s -> 0.04-0.08 s (the view file only), the fork 8-14 ms, the write's
CPU unchanged within the noise (copy-on-write faults on the objects both touch).

The child only pickles and writes one file: no logging (a lock another thread held at
fork time stays held in the child), no database (the inherited connection is never
touched), and it leaves with os._exit (no atexit handlers, no flushing of the parent's
buffers, no goodbye on the parent's database socket). What it answers goes back over
a pipe: one short ASCII line, never a secret (an exception's type and strerror only).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_ANSWER = 4096  # bytes a child may answer (a sha256 or one error line)


class ChildFailed(Exception):
    """The child could not write its file; the message is safe to log.

    ``killed``: the child was killed before it finished (it left its temp file behind).
    """

    def __init__(self, message: str, *, killed: bool = False) -> None:
        super().__init__(message)
        self.killed = killed


@dataclass
class Pending:
    """A running child: its pid and the read end of its answer pipe."""

    pid: int
    fd: int


def start(write: Callable[[], str]) -> Pending | None:
    """Run ``write`` (returns a short ASCII answer) in a forked child; None where fork is not possible.

    None means nothing was started: the caller does the work itself.
    """
    if not hasattr(os, "fork"):
        return None
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(r)
        os.close(w)
        log.debug("cannot fork (%s): writing in this process", exc.strerror or exc)
        return None
    if pid == 0:  # the child: never returns
        _child(r, w, write)
    os.close(w)
    return Pending(pid, r)


def _child(r: int, w: int, write: Callable[[], str]) -> None:
    """Do ``write``, answer "ok <its answer>" or "error <what>" on ``w``, and leave with os._exit."""
    code, answer = 1, "error: no answer"
    try:
        os.close(r)
        answer = "ok " + write()
        code = 0
    except BaseException as exc:  # everything must end in os._exit
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        answer = f"error {detail}"
    finally:
        try:
            os.write(w, answer.encode("ascii", "replace")[:MAX_ANSWER])
        finally:
            os._exit(code)


def wait(pending: Pending, timeout: float) -> str:
    """The child's answer once it has exited (reaped); ChildFailed if it failed or overran ``timeout``.

    However this wait ends (an overrun, an interrupt, a poll error), a child not seen
    to close its end is killed before it is reaped: the parent never blocks on it
    beyond ``timeout``. ``ChildFailed.killed`` says the child died mid-write (its temp
    file, which it could not remove, is the caller's to clean).
    """
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    ended = False  # the child closed its end of the pipe: it is in os._exit
    poller = select.poll()  # not select(): a descriptor above 1023 is fine
    poller.register(pending.fd, select.POLLIN)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(int(left * 1000) + 1):
                raise ChildFailed(f"no answer within {timeout:g} s", killed=True)
            data = os.read(pending.fd, MAX_ANSWER)
            if not data:
                ended = True
                break
            chunks.append(data)
    finally:
        os.close(pending.fd)
        if not ended:
            _kill(pending.pid)
        status = _reap(pending.pid)
    answer = b"".join(chunks).decode("ascii", "replace")
    if status is None:
        raise ChildFailed("the child was reaped elsewhere (SIGCHLD ignored?)")
    if os.waitstatus_to_exitcode(status) != 0 or not answer.startswith("ok "):
        raise ChildFailed(answer.removeprefix("error ") or f"exit status {status}")
    return answer[3:]


def _kill(pid: int) -> None:
    """SIGKILL the child; one already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _reap(pid: int) -> int | None:
    """The child's wait status, or None when the system reaped it already (SIGCHLD set to ignore)."""
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None
