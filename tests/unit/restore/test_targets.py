"""restore.targets: every chosen target is checked before the first one writes.

Real files and a real (empty) control-socket directory: the interfaces target refuses
because the interface does not run here, and the files target, which comes first,
must not have written by then.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.restore.test_values import doc, loaded
from wgsyncd import restore
from wgsyncd.restore import RestoreError, Targets


def test_no_target_is_not_chosen() -> None:
    assert not Targets().chosen()
    assert Targets(to_dir="/x").chosen() and Targets(apply=True).chosen()
    assert Targets(wgrest_url="http://127.0.0.1:1").chosen()


def test_runners_come_in_write_order_files_interfaces_wgrest(tmp_path: Path) -> None:
    targets = Targets(wgrest_url="http://127.0.0.1:1", apply=True, to_dir=str(tmp_path))
    assert list(targets.runners(loaded(doc()))) == ["files", "interfaces", "wgrest"]


def test_a_later_target_refusing_stops_the_files_before_they_are_written(tmp_path: Path) -> None:
    conf_dir, sockets = tmp_path / "etc", tmp_path / "run"
    conf_dir.mkdir()
    sockets.mkdir()
    (conf_dir / "wg0.conf").write_text("old\n")
    steps: list[str] = []
    targets = Targets(to_dir=str(conf_dir), apply=True, apply_via="uapi", socket_dir=str(sockets))
    with pytest.raises(RestoreError, match="wg0"):
        restore.run(loaded(doc()), targets, dry_run=False, phase=steps.append)
    assert (conf_dir / "wg0.conf").read_text() == "old\n"
    assert [s.split(" (")[0] for s in steps] == ["checking files", "checking interfaces"]


def test_one_target_writes_and_the_outcome_names_the_version(tmp_path: Path) -> None:
    version = loaded(doc())
    results = restore.run(version, Targets(to_dir=str(tmp_path)), dry_run=False)
    (change,) = results["files"]
    assert change.action == "created" and (tmp_path / "wg0.conf").stat().st_mode & 0o777 == 0o600
    out = restore.outcome(version, results, dry_run=False)
    assert (out["host_id"], out["version"], out["dry_run"]) == ("h", 7, False)
    text = restore.restore_text(out)
    assert text.startswith("restored host h version 7 (") and f"{tmp_path}/wg0.conf: created" in text


def test_a_dry_run_writes_nothing_and_says_would(tmp_path: Path) -> None:
    version = loaded(doc())
    out = restore.outcome(version, restore.run(version, Targets(to_dir=str(tmp_path)), dry_run=True), True)
    assert list(tmp_path.iterdir()) == []
    assert "would restore host h version 7" in restore.restore_text(out)
    assert "wg0.conf: would be created" in restore.restore_text(out)
