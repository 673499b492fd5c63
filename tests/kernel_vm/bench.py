"""The benchmark job INSIDE the kernel VM: netlink read of 10,000 peers next to `wg show all dump`.

Started by /job/bench.sh (tests/bench/kernel_vm.py puts it there)::

    python3.11 -S -m kernel_vm.bench setup                  # one 10,000-peer kernel interface
    python3.11 -S -m kernel_vm.bench measure --label debian  # once per pyroute2 version

Both sides are timed the way the daemon runs them, best of ROUNDS, interleaved so a
noisy moment hits both: wgsyncd's kernel read (backend netlink: link dump, device
dump, parse, Peer objects) against ``wg show all dump`` (process start included)
plus ``parse_wg_dump`` of its text, the ``wg`` backend's own work. The first read
of each is a warm-up (imports, page cache), as in the daemon's loop.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from kernel_vm import cases
from kernel_vm.runner import READ_TIMEOUT, STATE_DIR, WG, case_many, log, run_check, sh

NAME = cases.CASES["peers_10000"]
PEERS = 10000
ROUNDS = 7


def cmd_setup() -> int:
    """The one interface the benchmark reads: 10,000 peers with the mixed fields of the kernel tier."""
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)

    def build() -> tuple[bool, str, dict]:
        spec = case_many(NAME, PEERS, 51020, 0x1234)
        return len(spec["peers"]) == PEERS, f"{NAME}: {len(spec['peers'])} peers", {}

    run_check("bench_setup", build)
    return 0


def _timed(fn: Any) -> tuple[float, Any]:
    """Seconds one call of ``fn`` took, and what it returned."""
    t = time.monotonic()
    value = fn()
    return time.monotonic() - t, value


def cmd_measure(label: str) -> int:
    """Time both sides, interleaved, best of ROUNDS; one result line with the ratio."""
    t0 = time.monotonic()
    from wgsyncd.config import KernelConfig
    from wgsyncd.sources.kernel import read
    from wgsyncd.wire.wgdump import parse_wg_dump

    import_s = time.monotonic() - t0
    cfg = KernelConfig(backend="netlink", timeout=READ_TIMEOUT)

    def measure() -> tuple[bool, str, dict]:
        import pyroute2

        version = getattr(pyroute2, "__version__", "unknown")
        read(cfg)  # warm-up: the daemon's later cycles are what a loop pays
        parse_wg_dump(sh(WG, "show", "all", "dump"))
        best = {"read": float("inf"), "dump": float("inf"), "parse": float("inf")}
        result = parsed = None
        for _ in range(ROUNDS):
            seconds, result = _timed(lambda: read(cfg))
            best["read"] = min(best["read"], seconds)
            seconds, text = _timed(lambda: sh(WG, "show", "all", "dump"))
            best["dump"] = min(best["dump"], seconds)
            seconds, parsed = _timed(lambda text=text: parse_wg_dump(text))
            best["parse"] = min(best["parse"], seconds)
        peers = len(result.interfaces[NAME].peers) if NAME in result.interfaces else 0
        same = NAME in parsed and set(parsed[NAME].peers) == set(result.interfaces.get(NAME).peers or ())
        floor = best["dump"] + best["parse"]
        metrics = {
            "pyroute2": version,
            "peers": peers,
            "rounds": ROUNDS,
            "import_s": round(import_s, 3),
            "netlink_read_s": round(best["read"], 4),
            "wg_dump_s": round(best["dump"], 4),
            "parse_wg_dump_s": round(best["parse"], 4),
            "dump_and_parse_s": round(floor, 4),
            "ratio": round(best["read"] / floor, 3),
        }
        ok = peers == PEERS and same and not result.errors
        detail = (
            f"pyroute2 {version}: netlink read {best['read']:.3f}s vs `wg show all dump` "
            f"{best['dump']:.3f}s + parse {best['parse']:.3f}s = {floor:.3f}s: {metrics['ratio']:.2f}x"
        )
        if not ok:
            detail += f"; peers {peers}, same keys {same}, errors {[str(e) for e in result.errors]}"
        log(detail)
        return ok, detail, metrics

    run_check(cases.label_id("bench_netlink_10000", label), measure)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Dispatch setup / measure (`kernel_vm.runner done` ends the run)."""
    parser = argparse.ArgumentParser(prog="kernel_vm.bench")
    parser.add_argument("command", choices=("setup", "measure"))
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    if args.command == "setup":
        return cmd_setup()
    return cmd_measure(args.label)


if __name__ == "__main__":
    sys.exit(main())
