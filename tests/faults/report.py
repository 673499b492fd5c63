"""The fault table, as the suite prints it and the README shows it."""

from __future__ import annotations

from collections.abc import Sequence

from tests.faults.scenarios import Row

COLUMNS = (
    ("scenario", "scenario"),
    ("runs", "runs"),
    ("rows_equal_dump", "rows = wg dump"),
    ("partial", "partial/dup cycles"),
    ("totals_equal_deltas", "totals = sum of deltas"),
    ("bytes_lost", "bytes lost"),
    ("versions_lost", "versions lost"),
    ("recovery", "recovery"),
    ("crashes", "crashes"),
    ("log_line", "log line an operator sees"),
)


def format_rows(rows: Sequence[Row]) -> str:
    """A Markdown table (readable in a terminal too)."""
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [str(getattr(row, key)).replace("|", "/")[:160] or "(none)" for key, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
