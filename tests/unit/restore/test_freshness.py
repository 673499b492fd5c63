"""restore/freshness.py pure helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from wgsyncd.restore.freshness import _age

NOW = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


def test_age_of_a_head_in_the_past_and_in_the_future():
    assert _age(NOW - timedelta(days=3, hours=2), NOW) == "3 days ago"
    assert _age(NOW - timedelta(seconds=5), NOW) == "5 s ago"
    assert _age(NOW + timedelta(seconds=30), NOW) == "0 s ago"  # clock jitter: not worth a word
    assert _age(NOW + timedelta(hours=5), NOW) == "5 h in the future: the host's clock was ahead"
