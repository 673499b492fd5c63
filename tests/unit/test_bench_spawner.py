"""tests/bench/single.measured: a child's peak RSS is its own, not its parent's.

Linux keeps, across exec, the high-water mark of the memory a process had before it
(after vfork: the parent's), so ru_maxrss from wait4 is at least the parent's RSS when
it started the child. The bench process is bigger than a small sync; its numbers came
out as its own size. measured() starts the command from a small process instead.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.bench.single import measured

BIG = 300 * 1024 * 1024  # bytes this process holds while it starts the child
SMALL = "import sys; sys.stdout.write('ok')"


def test_a_child_started_directly_reports_at_least_its_parents_rss_the_spawner_does_not() -> None:
    held = bytearray(BIG)
    held[::4096] = b"x" * len(held[::4096])  # touched: resident
    proc = subprocess.Popen([sys.executable, "-c", SMALL], stdout=subprocess.DEVNULL)
    _pid, _status, usage = os.wait4(proc.pid, 0)
    assert usage.ru_maxrss * 1024 >= BIG, "the problem: the parent's memory counted as the child's"
    took, rss, code, out = measured([sys.executable, "-c", SMALL])
    del held
    assert code == 0 and out == "ok" and 0 < took < 30
    assert 1024 < rss < 100 * 1024, f"{rss} KiB: the child's own peak, not the parent's"


def test_the_exit_code_and_output_come_back_and_a_command_that_cannot_start_fails() -> None:
    _took, _rss, code, out = measured([sys.executable, "-c", "import sys; print('x'); sys.exit(4)"])
    assert code == 4 and out == "x\n"
    _took, _rss, code, out = measured(["/nonexistent/command"])
    assert code != 0 and "No such file or directory" in out
