"""Review findings for restore: the CLI with real wireguard-go, real PostgreSQL and real files."""

from __future__ import annotations

import pytest

from tests.test_restore import recovery, rhost, snapshot_files, synced  # noqa: F401 (fixtures)

pytestmark = pytest.mark.postgres


def test_two_targets_refuse_before_either_writes(synced):  # noqa: F811
    """--to-dir with --apply: the apply target's refusal must come before any conf file changes.

    Each target checked itself before its own first write, but to_dir ran (and wrote)
    before apply found that the interface does not exist: a half-done restore.
    """
    h, a, key_file, target = synced
    files = snapshot_files(target)
    h.ifaces.pop(a).delete()
    fail = h.wgsyncd("restore", "--to-dir", str(target), "--apply", "--recovery-key", key_file, check=False)
    assert fail.returncode == 1 and f"interface {a} does not exist on this machine" in fail.stderr
    assert snapshot_files(target) == files, "a refused restore wrote conf files"
