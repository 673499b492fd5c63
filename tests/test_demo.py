"""The README's first command (`make demo`) keeps working: it is the first thing a new user runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.beds import unavailable
from tests.beds.postgres import binaries_missing
from tests.beds.wireguard import missing_reason

pytestmark = pytest.mark.postgres


def test_demo_syncs_reports_and_restores():
    reason = missing_reason() or binaries_missing()
    if reason:
        unavailable("demo", reason)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.demo"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    first, second = out.split("$ wgsyncd sync\n")[1:3]
    assert "rows written" in first and "rows written" not in second.splitlines()[0]  # idle second sync
    assert "status=ok" in out and "no drift" in out and "sealed" in out
    assert "byte-identical to the original: True" in out
