"""SIGTERM mid-cycle when the signal lands in a finalizer: the cycle is still abandoned.

Why a test of its own: the daemon abandons a cycle by raising from its SIGTERM handler,
and Python runs the handler wherever the main thread is, a ``__del__`` included (the
pure-Python libpq wrapper frees every result in one). An exception there is swallowed
("Exception ignored in ...", a traceback in the journal) and the cycle ran on to its
end: the fault tests' SIGTERM scenario saw one "crash" in about one run out of eight.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from typing import Any

import pytest

from wgsyncd import config, daemon


class _Report:
    status = "ok"
    errors: list[str] = []

    def summary(self) -> str:
        return "synced"


class _FreesInAFinalizer:
    """Stands for a result object whose ``__del__`` runs mid-cycle; SIGTERM arrives inside it."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):  # the handler runs at one of these bytecodes, inside __del__
            pass


@pytest.fixture
def own_handlers() -> Any:
    """The loop installs process-wide handlers; give the test process its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM)}
    hook = sys.unraisablehook
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    for signum, handler in saved.items():
        signal.signal(signum, handler)
    sys.unraisablehook = hook


def test_sigterm_swallowed_by_a_finalizer_still_abandons_the_cycle(tmp_path, caplog, own_handlers) -> None:
    reached: list[str] = []
    unraisable: list[Any] = []
    sys.unraisablehook = unraisable.append  # what would print "Exception ignored in ..."

    def sync(_cfg: config.Config, _conn: Any, _sync_id: uuid.UUID) -> _Report:
        _FreesInAFinalizer()  # dropped at once: its __del__ runs here, and swallows the abandon
        reached.append("after the finalizer")
        time.sleep(30)  # the rest of the cycle: the retried abandon must cut it short
        reached.append("the cycle's end")
        return _Report()

    cfg = config.Config(host_id="h1", daemon=config.DaemonConfig(state_dir=str(tmp_path)))
    d = daemon.Daemon(cfg, sync=sync, connect=lambda _cfg: object())
    caplog.set_level("WARNING", logger="wgsyncd.daemon")
    assert d.loop() == daemon.EXIT_OK
    assert reached == ["after the finalizer"]
    assert "SIGTERM during a cycle: abandoned it" in caplog.text
    assert unraisable == []  # nothing reached the previous hook: no traceback in the journal


def test_other_unraisable_exceptions_still_reach_the_previous_hook(tmp_path, own_handlers) -> None:
    seen: list[Any] = []
    sys.unraisablehook = seen.append
    cfg = config.Config(host_id="h1", daemon=config.DaemonConfig(state_dir=str(tmp_path)))
    d = daemon.Daemon(cfg, sync=lambda *_a: _Report(), connect=lambda _cfg: object())
    d._install_signals()

    class Broken:
        def __del__(self) -> None:
            raise ValueError("a bug in a finalizer")

    Broken()
    assert [type(u.exc_value) for u in seen] == [ValueError]
