"""Kernel tier: wgsyncd's netlink reader against a real WireGuard kernel module under qemu.

One boot per session (tests/beds/qemu.py) runs tests/kernel_vm inside the VM once per
pyroute2 version (Debian's 0.7.2 and PyPI's current). Each result line the VM sends
becomes one test here; a result that never came back fails. Run with::

    .venv/bin/pytest tests/test_kernel_vm.py -m slow -q

Outside root or without qemu / a kernel it skips with the reason; with CI=true it fails.
"""

from __future__ import annotations

import pytest

from tests.beds import qemu
from tests.kernel_vm import cases

pytestmark = pytest.mark.slow
LABELS = qemu.pyroute2_labels()
EXPECTED = cases.expected_ids(LABELS)


@pytest.fixture(scope="session")
def vm_run(tmp_path_factory: pytest.TempPathFactory) -> qemu.VmRun:
    """The one boot of this session, shared by every test below."""
    return qemu.boot_session(tmp_path_factory)


def _result(run: qemu.VmRun, rid: str) -> dict:
    """The VM's result for ``rid``; fails with the console tail when it never came back."""
    result = run.results.get(rid)
    if result is None:
        why = run.error or "the VM job did not report it"
        pytest.fail(f"no result for {rid}: {why}\n--- console tail ---\n{run.console_tail()}", pytrace=False)
    return result


@pytest.mark.parametrize("rid", EXPECTED)
def test_in_vm(vm_run: qemu.VmRun, rid: str, record_property: pytest.RecordProperty) -> None:
    """One check that ran inside the VM: the netlink read equals the dump, the setup, the write."""
    result = _result(vm_run, rid)
    for key, value in result["metrics"].items():
        record_property(key, value)
    assert result["ok"], f"{rid}: {result['detail']}"


def test_vm_sent_only_expected_results(vm_run: qemu.VmRun) -> None:
    """Every id the VM sent is one the host expects, so the two sides never drift apart silently."""
    assert sorted(set(vm_run.results) - set(EXPECTED)) == []
    assert vm_run.done is not None, vm_run.error


def test_vm_boot_within_budget(vm_run: qemu.VmRun) -> None:
    """The whole tier must fit CI's 10 minutes: build plus boot well under that."""
    total = vm_run.build_seconds + vm_run.boot_seconds
    print(
        f"kernel VM: build {vm_run.build_seconds:.1f}s + boot/job {vm_run.boot_seconds:.1f}s = {total:.1f}s"
    )
    assert total < 540, f"kernel VM took {total:.0f}s"


@pytest.mark.parametrize("label", LABELS)
def test_timing_10000_peers_reported(
    vm_run: qemu.VmRun, label: str, record_property: pytest.RecordProperty
) -> None:
    """The netlink read time for 10,000 peers next to `wg show dump`, measured in the same boot."""
    metrics = _result(vm_run, cases.label_id("timing_10000_peers", label))["metrics"]
    for key in ("netlink_read_s", "wg_dump_s", "parse_wg_dump_s"):
        record_property(key, metrics.get(key))
    print(
        f"\n10,000 peers, pyroute2 {metrics.get('pyroute2')}: netlink read {metrics.get('netlink_read_s')}s, "
        f"`wg show dump` {metrics.get('wg_dump_s')}s (+ parse {metrics.get('parse_wg_dump_s')}s), "
        f"ratio {metrics.get('ratio_read_to_dump')}x"
    )
    assert metrics.get("netlink_read_s", 0) > 0 and metrics.get("wg_dump_s", 0) > 0


@pytest.mark.skip(reason="restore --apply not built yet (issue 5)")
def test_restore_apply_reproduces_dump() -> None:
    """Placeholder: wipe an interface, `wgsyncd restore --apply` through netlink, compare the dump."""
