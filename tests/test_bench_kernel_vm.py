"""`make bench`'s kernel VM step (tests/bench/kernel_vm.py): its table block, without a VM."""

from __future__ import annotations


def test_bench_vm_step_prints_each_version_with_its_ratio_or_why_it_was_skipped() -> None:
    """`make bench`'s kernel VM block: ratio and verdict per pyroute2 tree, or the skip reason."""
    from tests.bench import kernel_vm as bench_vm

    assert bench_vm.lines({"skipped": "needs root"}) == ["kernel VM step skipped: needs root", ""]
    metrics = {"pyroute2": "0.9.7", "netlink_read_s": 0.5, "wg_dump_s": 0.4, "parse_wg_dump_s": 0.6}
    block = bench_vm.lines(
        {
            "kernel": "6.1.0-56-amd64",
            "versions": {
                "pypi": {"ok": True, "ratio": 0.5, **metrics},
                "debian": {"ok": True, "ratio": 1.2, **metrics, "pyroute2": "0.7.2"},
                "broken": {"ok": False, "detail": "AttributeError: x"},
            },
        }
    )
    assert any("| pypi 0.9.7 |" in line and "0.50x" in line and line.endswith("| ok |") for line in block)
    assert any("| debian 0.7.2 |" in line and "1.20x" in line and line.endswith("| MISS |") for line in block)
    assert any("| broken | failed: AttributeError: x" in line for line in block)
