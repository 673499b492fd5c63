"""The benchmark's kernel VM step: netlink read of 10,000 peers vs `wg show all dump` + parse.

This machine has no WireGuard module, so the netlink reader meets a real kernel only in
the qemu bed (tests/beds/qemu.py, TESTBEDS.md section 2). This step boots it once with
a small job (tests/kernel_vm/bench.sh: one 10,000-peer interface, then
tests/kernel_vm/bench.py once per pyroute2 version) and reports, for each version, the
best-of-7 netlink read next to `wg show all dump` plus parse_wg_dump, measured in the
same boot; the ratio's target is <= 1.0. Python in the TCG-emulated VM is ~18x slower
than on the host, so only ratios mean anything, not the seconds.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from tests.beds import qemu

TARGET = 1.0
BENCH_SCRIPT = qemu.JOB_SRC / "bench.sh"
BOOT_TIMEOUT = qemu.BOOT_TIMEOUT  # $WGSYNCD_VM_TIMEOUT, 480 s by default


def unavailable() -> str | None:
    """Why the VM step cannot run here (printed, and the step skipped), or None."""
    return qemu.missing_requirements()


def _build_job(workdir: Path) -> Path:
    """wgsyncd and tests/kernel_vm with bench.sh as the job's entry point."""
    path = workdir / "job.cpio"
    with path.open("wb") as out:
        cpio = qemu.CpioWriter(out)
        qemu._add_package(cpio, "job/wgsyncd", qemu.REPO / "wgsyncd", workdir)
        qemu._add_package(cpio, "job/kernel_vm", qemu.JOB_SRC, workdir)
        cpio.add_bytes("job/run.sh", BENCH_SCRIPT.read_bytes(), 0o755)
        cpio.close()
    return path


def run_vm_bench(log: Any = print) -> dict[str, Any]:
    """Boot once, collect one result per pyroute2 version; {"skipped": reason} when the bed cannot run."""
    reason = unavailable()
    if reason:
        log(f"kernel VM step skipped: {reason}")
        return {"skipped": reason}
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wgsyncd-bench-vm-") as tmp:
        workdir = Path(tmp)
        log(f"kernel VM: booting (console in {workdir}/console.log while it runs)")
        inputs = qemu.gather_inputs()
        base = qemu.build_base(inputs)
        job = _build_job(workdir)
        run = qemu.boot(inputs, base, job, workdir, BOOT_TIMEOUT)
    out: dict[str, Any] = {
        "kernel": inputs.kernel,
        "seconds": round(time.monotonic() - t0, 1),
        "target_ratio": TARGET,
        "versions": {},
    }
    if run.error:
        out["error"] = f"{run.error}: {run.console_tail(6)}"
    for rid, result in sorted(run.results.items()):
        if rid.startswith("bench_netlink_10000["):
            label = rid.removeprefix("bench_netlink_10000[").removesuffix("]")
            out["versions"][label] = {"ok": result["ok"], "detail": result["detail"], **result["metrics"]}
        elif not result["ok"]:
            out.setdefault("failures", {})[rid] = result["detail"][:500]
    for label, metrics in out["versions"].items():
        log(f"kernel VM [{label}]: {metrics['detail']}")
    return out


def lines(vm: dict[str, Any]) -> list[str]:
    """The table block of the VM step (or the reason it did not run)."""
    if vm.get("skipped"):
        return [f"kernel VM step skipped: {vm['skipped']}", ""]
    out = [
        f"netlink read in the kernel VM ({vm['kernel']}, qemu TCG; 10,000 peers, best of 7)",
        "| pyroute2 | netlink read | `wg show all dump` | + parse | ratio | target | |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, m in vm["versions"].items():
        if "ratio" not in m:
            out.append(f"| {label} | failed: {m['detail'][:120]} | | | | | |")
            continue
        verdict = "ok" if m["ok"] and m["ratio"] <= TARGET else "MISS"
        out.append(
            f"| {label} {m['pyroute2']} | {m['netlink_read_s']:.3f} s | {m['wg_dump_s']:.3f} s | "
            f"{m['parse_wg_dump_s']:.3f} s | {m['ratio']:.2f}x | <= {TARGET:g}x | {verdict} |"
        )
    if vm.get("error"):
        out.append(f"VM run problem: {vm['error'][:300]}")
    return [*out, ""]


if __name__ == "__main__":  # the VM step alone: `python -m tests.bench.kernel_vm`
    import json
    from datetime import UTC, datetime

    started = datetime.now(UTC).isoformat(timespec="seconds")
    result = {"started_at": started, "command": "python -m tests.bench.kernel_vm", **run_vm_bench()}
    print("\n".join(lines(result)))
    out = Path(__file__).resolve().parent / "results" / f"kernel-vm-{started.replace(':', '')}.json"
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"JSON: {out}")
