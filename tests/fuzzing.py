"""Hypothesis settings for the fuzz tests, and the figures a fuzz run prints.

Two sizes: CI's fast tier runs a small profile (hundreds of cases per target), and
``make fuzz`` a large one. ``WGSYNCD_FUZZ_EXAMPLES`` sets the cases per target for
the parser fuzzers; the oracle-backed conf fuzzer (each case is several real tool
runs) takes ``WGSYNCD_FUZZ_ORACLE_EXAMPLES``. No example database is written: CI
starts from a fresh clone and a fuzz run must be repeatable from its seed.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections import Counter

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("WGSYNCD_FUZZ_EXAMPLES", "300"))
ORACLE_EXAMPLES = int(os.environ.get("WGSYNCD_FUZZ_ORACLE_EXAMPLES", "120"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
ORACLE = settings(FUZZ, max_examples=ORACLE_EXAMPLES)

# target -> Counter(cases, accepted, rejected, ...): printed at exit (pytest -s / make fuzz)
TALLY: dict[str, Counter[str]] = {}


def count(target: str, outcome: str) -> None:
    """Record one case of ``target`` and its outcome (accepted / rejected / ...)."""
    tally = TALLY.setdefault(target, Counter())
    tally["cases"] += 1
    tally[outcome] += 1


def _report() -> None:
    if not TALLY or not os.environ.get("WGSYNCD_FUZZ_REPORT"):
        return
    out = sys.__stdout__ or sys.stdout
    out.write("\nfuzz figures (cases run; a crash or a wrong row fails the run):\n")
    for target, tally in sorted(TALLY.items()):
        rest = ", ".join(f"{k} {v}" for k, v in sorted(tally.items()) if k != "cases")
        out.write(f"  {target:<28} {tally['cases']:>7} cases  ({rest})\n")


atexit.register(_report)
