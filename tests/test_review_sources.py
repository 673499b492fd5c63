"""Review pass over the sources and merge: each test pins one bug that was found and fixed."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from wgsyncd.config import KernelConfig
from wgsyncd.sources import kernel


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _fake_wg(tmp_path: Path, body: str) -> str:
    """A real executable standing in for ``wg`` that prints a given dump."""
    path = tmp_path / "wg"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_wg_backend_line_with_wrong_column_count_drops_the_whole_interface(tmp_path: Path) -> None:
    """A malformed line in the middle of an interface must not leave it half-read (first peer only)."""
    pub, p1, p2 = _key(), _key(), _key()
    dump = tmp_path / "dump"
    dump.write_text(
        f"wg0\t(none)\t{pub}\t51820\toff\n"
        f"wg0\t{p1}\t(none)\t(none)\t10.0.0.2/32\t0\t0\t0\toff\n"
        "wg0\tcut\tshort\n"
        f"wg0\t{p2}\t(none)\t(none)\t10.0.0.3/32\t0\t0\t0\toff\n"
    )
    result = kernel.read(KernelConfig(backend="wg", wg_command=_fake_wg(tmp_path, f"cat {dump}")))
    assert "wg0" not in result.interfaces
    (err,) = result.errors
    assert err.interface == "wg0" and "line 3" in err.message


def _res(source, iface):
    from wgsyncd.state import SourceResult

    return SourceResult(source, {iface.name: iface})


def test_merge_reports_a_changed_interface_address_even_in_the_same_subnet() -> None:
    """Address keeps its host bits (it is the interface's own IP): 10.0.0.1/24 != 10.0.0.2/24."""
    from datetime import UTC, datetime

    from wgsyncd.merge import merge
    from wgsyncd.state import DriftKind, Interface, Source

    now = datetime(2026, 11, 25, tzinfo=UTC)
    conf = Interface("wg0", addresses=("10.0.0.1/24", "fd00::1/64"))
    rest = Interface("wg0", addresses=("10.0.0.2/24", "fd00:0::1/64"))
    state = merge("h", "h", [_res(Source.CONF, conf), _res(Source.WGREST, rest)], now)
    (drift,) = [d for d in state.drift if d.field == "addresses"]
    assert drift.kind == DriftKind.DIFFERS
    # same addresses spelled differently and in another order are no drift
    same = Interface("wg0", addresses=("fd00:0:0::1/64", "10.0.0.1/24"))
    state = merge("h", "h", [_res(Source.CONF, conf), _res(Source.WGREST, same)], now)
    assert [d for d in state.drift if d.field == "addresses"] == []
