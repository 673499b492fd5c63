"""The terminal table (wgsyncd/render.py): what a host stores cannot blow up the operator's output."""

from __future__ import annotations

from wgsyncd import render


def test_a_huge_cell_is_cut_and_marked_so_padding_cannot_multiply_it() -> None:
    """One 1 MB peer name in 200 rows was 200 MB of padded output (every row padded to it)."""
    rows = [{"host_id": f"h{i}", "name": "n" * 1_000_000} for i in range(200)]
    out = render.table(rows, ("host_id", "name"))
    lines = out.splitlines()
    assert len(lines) == 201 and len(out) < 201 * (render.CELL_MAX + 10)
    assert lines[1].endswith("n" * (render.CELL_MAX - 1) + render.CUT_MARK)


def test_cells_up_to_the_limit_are_shown_whole_and_times_still_shortened() -> None:
    rows = [{"name": "x" * render.CELL_MAX, "at": "2026-11-27T08:00:00.123456+00:00", "n": 5}]
    lines = render.table(rows, ("name", "at", "n")).splitlines()
    assert lines[1].split() == ["x" * render.CELL_MAX, "2026-11-27", "08:00:00", "5"]
    assert render.CUT_MARK not in lines[1]
