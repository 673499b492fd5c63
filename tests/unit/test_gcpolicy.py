"""wgsyncd.gcpolicy: the collector off (and back on) around a one-shot run or a big build."""

from __future__ import annotations

import gc

import pytest

from wgsyncd import gcpolicy


def test_one_shot_turns_the_collector_off_and_back_on_even_after_an_error() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gcpolicy.one_shot():
        assert not gc.isenabled()
        raise RuntimeError("a failed run")
    assert gc.isenabled()


def test_what_is_built_is_frozen_after_and_the_collector_is_back_on() -> None:
    try:
        gc.unfreeze()
        with gcpolicy.building():
            assert not gc.isenabled()
            built = [[i] for i in range(1000)]
        assert gc.isenabled() and gc.get_freeze_count() >= len(built)
    finally:
        gc.unfreeze()


def test_inside_a_one_shot_run_nothing_is_frozen() -> None:
    gc.unfreeze()
    with gcpolicy.one_shot(), gcpolicy.building():
        [[i] for i in range(1000)]
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_the_sync_command_runs_its_imports_with_the_collector_off(monkeypatch) -> None:
    from wgsyncd import cli

    seen = []
    monkeypatch.setattr(cli, "_sync", lambda ctx: seen.append(gc.isenabled()))
    cli.sync.callback.__wrapped__(None)  # type: ignore[union-attr]
    assert seen == [False] and gc.isenabled()


def test_a_daemon_cycle_runs_without_the_collector_and_its_cyclic_garbage_goes_right_after() -> None:
    import weakref

    class Node:
        pass

    with gcpolicy.daemon_cycle():
        assert not gc.isenabled()
        node = Node()
        node.me = node  # type: ignore[attr-defined]  # a cycle: reference counting alone never frees it
        gone = weakref.ref(node)
        del node
        assert gone() is not None
    assert gc.isenabled() and gone() is None


def test_garbage_that_outlived_its_own_cycle_is_freed_within_some_cycles() -> None:
    """A cycle still in use when its cycle ended (promoted), dropped later: not kept to the hourly settle."""
    import weakref

    class Node:
        pass

    gc.collect()
    with gcpolicy.daemon_cycle():
        node = Node()
        node.me = node  # a reference cycle: only the collector frees it
        alive = weakref.ref(node)
    with gcpolicy.daemon_cycle():
        del node  # dropped one cycle later: it sits in generation 1 now
    for _ in range(gc.get_threshold()[1] + 1):
        with gcpolicy.daemon_cycle():
            pass
    assert alive() is None


def test_the_daemon_loop_runs_each_cycle_under_the_policy(tmp_path, monkeypatch) -> None:
    from wgsyncd import config, daemon

    seen: list[bool] = []
    cfg = config.Config(host_id="h1", daemon=config.DaemonConfig(state_dir=str(tmp_path)))
    d = daemon.Daemon(cfg)

    def run_cycle() -> float:
        seen.append(gc.isenabled())
        d.stop_requested = True
        return 0.0

    monkeypatch.setattr(d, "run_cycle", run_cycle)
    monkeypatch.setattr(daemon, "settle_heap", lambda: False)
    assert d.loop() == daemon.EXIT_OK
    assert seen == [False] and gc.isenabled()


_LEAVER = """
import atexit, logging, logging.handlers, sys
from wgsyncd import gcpolicy
target = logging.FileHandler(sys.argv[1])
logging.getLogger().addHandler(logging.handlers.MemoryHandler(100, target=target))  # held until flushed
logging.getLogger().warning("a line the handler holds")
atexit.register(lambda: print("teardown ran"))
sys.stdout.write("synced, no newline yet")  # in the stdout buffer (a pipe: block-buffered)
sys.stderr.write("on stderr")
gcpolicy.leave(4)
print("not reached")
"""


def test_leave_ends_with_the_code_after_flushing_output_and_logs_without_teardown(tmp_path) -> None:
    import subprocess
    import sys

    logfile = tmp_path / "log"
    proc = subprocess.run([sys.executable, "-c", _LEAVER, str(logfile)], capture_output=True, text=True)
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout == "synced, no newline yet" and proc.stderr == "on stderr"
    assert logfile.read_text() == "a line the handler holds\n"  # logging.shutdown flushed it
    assert "teardown ran" not in proc.stdout


def test_leave_with_stdout_closed_still_ends_with_its_code() -> None:
    import subprocess
    import sys

    code = "import sys, os; from wgsyncd import gcpolicy; print('x'); os.close(1); gcpolicy.leave(4)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 4 and proc.stderr == ""
