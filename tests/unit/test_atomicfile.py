"""wgsyncd.atomicfile.write_atomic_with: streamed, atomic, no leftovers on failure."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from wgsyncd.atomicfile import write_atomic, write_atomic_with


def test_streamed_write_can_patch_its_header(tmp_path: Path) -> None:
    target = tmp_path / "cache"

    def fill(fh) -> None:
        fh.write(b"XXXX:")
        for i in range(3):
            fh.write(b"%d;" % i)
        fh.seek(0)
        fh.write(b"HEAD")

    write_atomic_with(target, fill, 0o600)
    assert target.read_bytes() == b"HEAD:0;1;2;"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_failing_fill_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "cache"
    write_atomic(target, "old\n", 0o600)

    def fill(fh) -> None:
        fh.write(b"half")
        raise RuntimeError("pickling failed")

    with pytest.raises(RuntimeError):
        write_atomic_with(target, fill)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
