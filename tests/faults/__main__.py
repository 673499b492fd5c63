"""`make faults`: every fault scenario, bigger than CI's short form; prints the table.

    python -m tests.faults [--kills N] [--seed S] [--only NAME ...]

Needs root, wireguard-go and PostgreSQL 15 (as the short form does). Writes the
table to tests/faults/results/<UTC time>.md as well; the README's reliability
section shows one of these.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from tests.beds.wireguard import WgBed
from tests.faults import scenarios, scenarios_more
from tests.faults.report import format_rows
from tests.faults.rig import Rig

RESULTS = Path(__file__).with_name("results")


def plan(kills: int) -> list[tuple[str, Callable[..., scenarios.Row], int, dict]]:
    """(name, scenario, n, extra kwargs) in the order the table shows them."""
    return [
        ("kills", scenarios.pg_kills, kills, {}),
        ("silent", scenarios.silent_db, 3, {}),
        ("outage", scenarios.outage_with_resets, 4, {}),
        ("recreate", scenarios.interface_recreated, 5, {}),
        ("sigterm", scenarios.sigterm_cycles, 10, {}),
        ("replay", scenarios.sigterm_replay, 4, {}),
        ("full", scenarios.state_dir_fault, 5, {"fault": "full"}),
        ("readonly", scenarios.state_dir_fault, 5, {"fault": "read-only"}),
        ("wgrest", scenarios_more.wgrest_flapping, 5, {}),
        ("conf", scenarios_more.conf_rewritten_in_place, 10, {}),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run, print, save; exit 1 when a scenario raised."""
    ap = argparse.ArgumentParser(prog="python -m tests.faults")
    ap.add_argument("--kills", type=int, default=30, help="PostgreSQL kills (default 30)")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--only", nargs="*", help="scenario names: " + " ".join(p[0] for p in plan(0)))
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    rows: list[scenarios.Row] = []
    failed = 0
    for name, func, n, kwargs in plan(args.kills):
        if args.only and name not in args.only:
            continue
        bed = WgBed()
        rig = Rig(bed).start()
        t0 = time.monotonic()
        try:
            row = func(rig, n, rng, **kwargs)
        except Exception as exc:
            failed += 1
            traceback.print_exc()
            row = scenarios.Row(f"{name}: FAILED", log_line=f"{type(exc).__name__}: {exc}"[:150])
        finally:
            rig.close()
            bed.close()
        rows.append(row)
        print(f"{name}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
        print(format_rows([row]).splitlines()[-1], flush=True)
    table = format_rows(rows)
    print("\n" + table)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / (time.strftime("%Y-%m-%dT%H%M%S", time.gmtime()) + ".md")
    out.write_text(f"seed {args.seed}, {args.kills} kills\n\n{table}\n")
    print(f"\nwritten to {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
