"""History made hourly past the detail window (migration 0010): traffic folded, status thinned.

Real PostgreSQL, the hosts' own login roles (tests/beds/roles.py). A host's per-cycle
traffic rows go in through its own `wgsyncd_put_stats`, as a cycle writes them; the fold
runs through `store.prune` as the agent calls it. What must hold: every sum between two
hours is unchanged, only rows past the window and only the caller's own rows are
touched, a second call changes nothing, batches and late (replayed) rows add up the
same, the buckets are UTC hours whatever the session's time zone, and a host's own
absurd deltas cannot make its pruning fail for ever. sync_status keeps, per hour, its
first row and every row that says something (not ok, config written, a drift list no
newer row holds).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.beds.roles import Fleet, fleet, host_state, owner_counts, sync  # noqa: F401 (fixture)
from wgsyncd import config, cycle
from wgsyncd.memo import Memo
from wgsyncd.store import retention

pytestmark = pytest.mark.postgres

NOW = datetime.now(UTC).replace(minute=40, second=0, microsecond=0) - timedelta(hours=1)
HOUR = NOW.replace(minute=0)
MAX_DELTA = 2**62
HOURLY = retention.Hourly(traffic_after=timedelta(hours=1), status_after=timedelta(hours=1))


def _put(conn: psycopg.Connection[Any], host_id: str, rows: list[tuple[str, datetime, int, int]]) -> None:
    """Per-cycle traffic rows (peer, observed_at, rx, tx) through the host's own function."""
    with conn.transaction():
        conn.execute(
            "SELECT wgsyncd_put_stats(%s, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', "
            "%s::text[], %s::text[], %s::timestamptz[], %s::bigint[], %s::bigint[])",
            (
                host_id,
                ["wg0"] * len(rows),
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
            ),
        )


def _as_owner(f: Fleet, query: str, host_id: str) -> list[Any]:
    """``query`` (one %s: the host_id) as the schema owner, who sees every host's rows."""
    with psycopg.connect(f.dsn(f.owner)) as owner:
        return owner.execute(query, (host_id,)).fetchall()


def _rows(f: Fleet, host_id: str) -> list[tuple[str, datetime, int, int]]:
    """The host's traffic rows, oldest first."""
    return _as_owner(
        f,
        "SELECT public_key, observed_at, rx_delta, tx_delta FROM peer_traffic WHERE host_id = %s "
        "ORDER BY observed_at, public_key",
        host_id,
    )


def _hourly(rows: list[tuple[str, datetime, int, int]]) -> Counter[tuple[str, datetime, str]]:
    """Sums per peer per UTC hour: what every question between two hours sees."""
    out: Counter[tuple[str, datetime, str]] = Counter()
    for key, at, rx, tx in rows:
        hour = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        out[(key, hour, "rx")] += rx
        out[(key, hour, "tx")] += tx
    return out


def _cycles(hours_ago: int, peers: tuple[str, ...], every: int = 7) -> list[tuple[str, datetime, int, int]]:
    """One row per peer every ``every`` minutes through the hour ``hours_ago`` before HOUR."""
    start = HOUR - timedelta(hours=hours_ago)
    return [
        (p, start + timedelta(minutes=m, seconds=13), 1000 + m, 10 * m + i)
        for m in range(0, 60, every)
        for i, p in enumerate(peers)
    ]


def test_fold_keeps_every_hour_sum_and_touches_only_old_own_rows(fleet: Fleet) -> None:  # noqa: F811
    f = fleet
    old = _cycles(3, ("P1", "P2")) + _cycles(2, ("P1",)) + [("P2", HOUR - timedelta(hours=2), 5, 6)]
    recent = [("P1", NOW - timedelta(minutes=m), 7, 8) for m in (1, 12, 30)]  # inside the 1 h window
    with f.connect(f.role_a) as a, f.connect(f.role_b) as b:
        _put(a, f.host_a, old + recent)
        _put(b, f.host_b, _cycles(3, ("P1",)))
        before_a, before_b = _rows(f, f.host_a), owner_counts(f, f.host_b)
        pruned = retention.prune(a, f.host_a, NOW, 90, HOURLY)
        on_the_hour = 1  # P2's row at exactly HOUR - 2 h is already its bucket's row
        assert pruned.folded == len(old) - on_the_hour and not pruned.backlog()
        after = _rows(f, f.host_a)
        assert _hourly(after) == _hourly(before_a)
        cutoff = NOW - timedelta(hours=1)
        assert all(at.minute == at.second == at.microsecond == 0 for _k, at, _r, _t in after if at < cutoff)
        assert sorted(r for r in after if r[1] >= cutoff) == sorted(r for r in before_a if r[1] >= cutoff)
        assert len([r for r in after if r[1] < cutoff]) == 4  # P1 and P2 at -3 h and at -2 h
        assert owner_counts(f, f.host_b) == before_b  # the other host's rows: untouched
        again = retention.prune(a, f.host_a, NOW, 90, HOURLY)
        assert again.folded == 0 and _rows(f, f.host_a) == after
        # host B's role cannot fold host A's rows, whatever host_id it names
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=f"bound to host_id {f.host_b}"):
            b.execute("SELECT wgsyncd_rollup_traffic(%s, NULL, now(), 1000)", (f.host_a,))


def test_batches_late_rows_and_session_time_zone_add_up_the_same(
    fleet: Fleet,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    f = fleet
    rows = _cycles(5, ("P1", "P2", "P3"), every=4)
    with f.connect(f.role_a) as a:
        a.execute("SET TIME ZONE 'Asia/Kolkata'")  # +05:30: a local hour is not a UTC hour
        a.commit()
        _put(a, f.host_a, rows)
        want = _hourly(_rows(f, f.host_a))
        monkeypatch.setattr(retention, "BATCH", 7)  # a bucket split across calls adds up
        calls = 0
        while retention.prune(a, f.host_a, NOW, 90, HOURLY).backlog():
            calls += 1
        assert calls >= len(rows) // 7 - 1
        folded = _rows(f, f.host_a)
        assert _hourly(folded) == want and len(folded) == 3
        assert all(at.astimezone(UTC).minute == 0 for _k, at, _r, _t in folded)
        # a cycle replayed from the spool days later: its rows at their own old times
        late = [("P1", HOUR - timedelta(hours=5, minutes=-31), 100, 200)]
        _put(a, f.host_a, late)
        assert retention.prune(a, f.host_a, NOW, 90, HOURLY).folded == 1
        assert _hourly(_rows(f, f.host_a)) == want + _hourly(late) and len(_rows(f, f.host_a)) == 3


def test_absurd_own_deltas_are_capped_not_a_stuck_prune(fleet: Fleet) -> None:  # noqa: F811
    """A host's own poisoned rows (each within 0007's bound, their sum not): the hour row is
    capped at the bound and pruning goes on."""
    f = fleet
    start = HOUR - timedelta(hours=3)
    poison = [("P1", start + timedelta(minutes=m, seconds=1), MAX_DELTA, 1) for m in (1, 2, 3)]
    with f.connect(f.role_a) as a:
        _put(a, f.host_a, poison)
        _put(a, f.host_a, [("P1", start, MAX_DELTA, 1)])  # the hour row already exists: added into
        assert retention.prune(a, f.host_a, NOW, 90, HOURLY).folded == 3
        assert _rows(f, f.host_a) == [("P1", start, MAX_DELTA, 4)]


def test_the_agent_folds_everything_once_a_day_and_the_last_two_hours_between(
    fleet: Fleet,  # noqa: F811
    tmp_path,
) -> None:
    """cycle._prune: the first prune of a host, and one a day after, folds its whole history
    (rows from before schema 10, a spool replay's old rows, what crossed the boundary while
    a timer-mode host was off); the hourly ones between only what crossed it lately."""
    f = fleet
    path = tmp_path / "wgsyncd.toml"
    path.write_text(
        f'host_id = "{f.host_a}"\n[database]\ndsn = "{f.dsn(f.role_a)}"\ntraffic_detail_hours = 1\n'
    )
    cfg = config.load(str(path))
    month_old = [
        ("P1", HOUR - timedelta(days=30, minutes=-5), 1, 2),
        ("P1", HOUR - timedelta(days=30, minutes=-9), 3, 4),
    ]
    memo = Memo().for_host(f.host_a)
    with f.connect(f.role_a) as a:
        _put(a, f.host_a, month_old)
        cycle._prune(a, cfg, NOW, memo)
        assert f.host_a in memo.folded and len(_rows(f, f.host_a)) == 1  # the whole history, once
        _put(a, f.host_a, month_old)  # older than the look-back
        replayed = [
            ("P2", NOW - timedelta(hours=20), 5, 6),
            ("P2", NOW - timedelta(hours=20, minutes=3), 7, 8),
        ]
        lately = [
            ("P3", NOW - timedelta(hours=1, minutes=10), 1, 1),
            ("P3", NOW - timedelta(hours=1, minutes=12), 2, 2),
        ]
        _put(a, f.host_a, replayed + lately)
        memo.pruned.clear()  # an hour later
        cycle._prune(a, cfg, NOW, memo)
        rows = _rows(f, f.host_a)
        assert [r for r in rows if r[0] == "P3"] == [("P3", lately[0][1].replace(minute=0, second=0), 3, 3)]
        assert sorted(r for r in rows if r[0] == "P2") == sorted(replayed)  # older than two hours: later
        assert len([r for r in rows if r[0] == "P1"]) == 3  # the hour row and the two month-old rows
        # a day later (or a timer-mode host back after two days: its memo file says when it
        # last folded everything): the whole pass takes in what the look-back missed
        memo.pruned.clear()
        memo.folded[f.host_a] -= cycle.FULL_FOLD_EVERY.total_seconds()
        cycle._prune(a, cfg, NOW, memo)
        rows = _rows(f, f.host_a)
        assert [r for r in rows if r[0] == "P2"] == [
            ("P2", (NOW - timedelta(hours=20)).replace(minute=0), 12, 14)
        ]
        assert len([r for r in rows if r[0] == "P1"]) == 1
        assert memo.folded[f.host_a] == NOW.timestamp()
        _put(a, f.host_a, month_old)
        memo.clear()  # a new process (or another host_id): a whole pass again
        memo.for_host(f.host_a)
        cycle._prune(a, cfg, NOW, memo)
        assert len([r for r in _rows(f, f.host_a) if r[0] == "P1"]) == 1


def test_a_long_history_is_folded_oldest_first_a_window_at_a_time_over_several_cycles(
    fleet: Fleet,  # noqa: F811
    tmp_path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A host with days of per-cycle rows (from before schema 10): the whole pass walks them
    oldest first, a day per statement, and each prune goes on where the last one stopped,
    so no call scans again the hour rows the calls before it made (review8's upgrade cost)."""
    f = fleet
    path = tmp_path / "wgsyncd.toml"
    path.write_text(
        f'host_id = "{f.host_a}"\n[database]\ndsn = "{f.dsn(f.role_a)}"\ntraffic_detail_hours = 1\n'
    )
    cfg = config.load(str(path))
    days = 6
    rows = [r for h in range(2, 24 * days, 5) for r in _cycles(h, ("P1", "P2"), every=20)]
    monkeypatch.setattr(retention, "BATCH", 25)  # a day holds more: a window takes two calls
    monkeypatch.setattr(retention, "WALK_SECONDS", 0.0)  # one window per call at most
    memo = Memo().for_host(f.host_a)
    with f.connect(f.role_a) as a:
        _put(a, f.host_a, rows)
        want = _hourly(_rows(f, f.host_a))
        resumes = []
        for _ in range(100):
            cycle._prune(a, cfg, NOW, memo)
            if f.host_a in memo.folded:
                break
            resumes.append(memo.fold_from[f.host_a])
            # oldest first: every row already folded is older than every row still to fold
            left = [at for _k, at, _r, _t in _rows(f, f.host_a) if at.minute or at.second]
            hours = [at for _k, at, _r, _t in _rows(f, f.host_a) if not (at.minute or at.second)]
            assert left and (not hours or max(hours) < min(left))
            assert datetime.fromtimestamp(resumes[-1], UTC) <= min(left)
        assert f.host_a in memo.folded and f.host_a not in memo.fold_from, "the pass got through"
        assert resumes == sorted(resumes) and len(set(resumes)) >= days - 1  # a window at a time
        assert len(resumes) >= len(rows) // 25 - 1
        after = _rows(f, f.host_a)
        assert _hourly(after) == want and all(at.minute == at.second == 0 for _k, at, _r, _t in after)
        # the next whole pass (a day later) starts at the oldest row again: a replayed old row is folded
        late = [("P1", rows[0][1] + timedelta(minutes=1), 100, 200)]
        _put(a, f.host_a, late)
        memo.pruned.clear()
        memo.folded[f.host_a] -= cycle.FULL_FOLD_EVERY.total_seconds()
        monkeypatch.setattr(retention, "WALK_SECONDS", 60.0)
        cycle._prune(a, cfg, NOW, memo)
        assert _hourly(_rows(f, f.host_a)) == want + _hourly(late) and len(_rows(f, f.host_a)) == len(after)


def _status(f: Fleet, host_id: str) -> list[tuple]:
    """The host's sync_status rows, oldest first."""
    return _as_owner(
        f, "SELECT started_at, status FROM sync_status WHERE host_id = %s ORDER BY started_at, id", host_id
    )


def test_status_keeps_an_hour_s_first_row_and_every_row_that_says_something(fleet: Fleet) -> None:  # noqa: F811
    f = fleet
    start = HOUR - timedelta(hours=3)
    rows = [(start + timedelta(minutes=m, seconds=5), "ok", 0, None, None) for m in range(0, 120)]
    rows[10] = (rows[10][0], "partial", 0, None, None)
    rows[20] = (rows[20][0], "ok", 3, None, None)  # a config change
    rows[30] = (rows[30][0], "ok", 0, "d1", '[{"older": 1}]')  # a newer row holds d1's list too
    rows[40] = (rows[40][0], "ok", 0, "d1", '[{"newer": 1}]')
    rows[50] = (rows[50][0], "ok", 0, "d1", None)  # refers to d1 by hash
    rows[70] = (rows[70][0], "ok", 0, "d2", '[{"only": 1}]')
    with f.connect(f.role_a) as a, f.connect(f.role_b) as b:
        sync(a, host_state(f.host_a), f)  # the hosts row and this cycle's own status row
        sync(b, host_state(f.host_b), f)
        with a.transaction():
            for at, status, written, sha, drift in rows:
                a.execute(
                    "INSERT INTO sync_status (host_id, sync_id, started_at, finished_at, status, "
                    "config_rows_written, drift_sha256, drift, agent_version) "
                    "VALUES (%s, gen_random_uuid(), %s, %s, %s, %s, %s, %s::jsonb, 'test')",
                    (f.host_a, at, at, status, written, sha, drift),
                )
        before_b = owner_counts(f, f.host_b)
        pruned = retention.prune(a, f.host_a, NOW, 90, HOURLY)
        kept = [r[0] for r in _status(f, f.host_a) if r[0] < start + timedelta(hours=2)]
        # 9 and 11: the ok rows around the partial one; 119: the newest this call sees (no next row yet)
        assert kept == [rows[i][0] for i in (0, 9, 10, 11, 20, 40, 60, 70, 119)]
        assert pruned.thinned == 120 - 9
        assert owner_counts(f, f.host_b) == before_b
        # the row that kept only d1's hash still reads its list: from the newest row holding it
        with a.transaction():
            listed = a.execute(
                "SELECT d.drift FROM sync_status d WHERE d.host_id = %s AND d.drift_sha256 = 'd1' "
                "AND d.drift IS NOT NULL ORDER BY d.started_at DESC LIMIT 1",
                (f.host_a,),
            ).fetchone()
        assert listed == ([{"newer": 1}],)
        assert retention.prune(a, f.host_a, NOW, 90, HOURLY).thinned == 0  # nothing left to thin
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=f"bound to host_id {f.host_b}"):
            b.execute("SELECT wgsyncd_thin_status(%s, NULL, now(), 1000)", (f.host_a,))


MAX_BATCH = 100_000  # 0010's bound on p_batch


def test_a_host_s_batch_is_bounded_whatever_it_asks(fleet: Fleet) -> None:  # noqa: F811
    """A host may call the functions with any p_batch: NULL (LIMIT NULL is no limit) or 2^31-1
    would build an array of every ctid of its history in one backend (GBs: the OOM killer
    restarts every backend of the cluster). Each call folds or thins at most MAX_BATCH rows."""
    f = fleet
    start = HOUR - timedelta(days=3)
    with psycopg.connect(f.dsn(f.owner)) as owner:
        owner.execute("DELETE FROM host_quotas")
        owner.execute(
            "INSERT INTO peer_traffic (host_id, interface, public_key, observed_at, rx_delta, tx_delta) "
            "SELECT %s, 'wg0', 'P' || (i %% 50), %s + i * interval '1 second' + interval '1 ms', 1, 1 "
            "FROM generate_series(1, %s) i",
            (f.host_a, start, MAX_BATCH + 10),
        )
    with f.connect(f.role_a) as a:
        for batch in (None, 2**31 - 1, -5):
            with a.transaction():
                n = a.execute(
                    "SELECT wgsyncd_rollup_traffic(%s, NULL, %s, %s)", (f.host_a, NOW, batch)
                ).fetchone()
            assert n is not None and n[0] <= MAX_BATCH, batch
            with a.transaction():
                thin = "SELECT wgsyncd_thin_status(%s, NULL, %s, %s)"
                t = a.execute(thin, (f.host_a, NOW, batch)).fetchone()
            assert t is not None and t[0] <= MAX_BATCH
        with a.transaction():
            a.execute("SELECT wgsyncd_rollup_traffic(%s, NULL, %s, %s)", (f.host_a, NOW, MAX_BATCH))
        assert sum(r[2] for r in _rows(f, f.host_a)) == MAX_BATCH + 10  # every byte still there
        # 0003's retention function: the same bound now (it deleted every old row at once)
        with psycopg.connect(f.dsn(f.owner)) as owner:  # back to one row per second, old
            owner.execute("DELETE FROM peer_traffic WHERE host_id = %s", (f.host_a,))
            owner.execute(
                "INSERT INTO peer_traffic (host_id, interface, public_key, observed_at, rx_delta, tx_delta) "
                "SELECT %s, 'wg0', 'P', %s + i * interval '1 second', 1, 1 FROM generate_series(1, %s) i",
                (f.host_a, start, MAX_BATCH + 10),
            )
        prune = "SELECT traffic FROM wgsyncd_prune(%s, %s, %s)"
        for batch, want in ((None, 0), (2**31 - 1, MAX_BATCH), (2**31 - 1, 10)):  # NULL asks for none
            with a.transaction():
                assert a.execute(prune, (f.host_a, NOW, batch)).fetchone() == (want,), batch


def test_a_fold_held_open_with_crafted_settings_blocks_no_other_host(fleet: Fleet) -> None:  # noqa: F811
    """Host A folds and thins with its own TimeZone and timezone_abbreviations and keeps the
    transaction open; host B's whole cycle, fold and thin go through under a 1 s lock_timeout."""
    f = fleet
    with f.connect(f.role_a) as a, f.connect(f.role_b) as b:
        _put(a, f.host_a, _cycles(3, ("P1", "P2")))
        _put(b, f.host_b, _cycles(3, ("P1", "P2")))
        sync(b, host_state(f.host_b), f)
        a.execute("SET TimeZone = 'Asia/Kathmandu'")  # +05:45
        a.execute("SET timezone_abbreviations = 'India'")
        a.commit()
        a.execute("BEGIN")
        fold = "SELECT wgsyncd_rollup_traffic(%s, NULL, %s, 100000)"
        assert a.execute(fold, (f.host_a, NOW)).fetchone()[0] > 0
        a.execute("SELECT wgsyncd_thin_status(%s, NULL, %s, 100000)", (f.host_a, NOW + timedelta(days=1)))
        try:
            b.execute("SET lock_timeout = '1s'")
            b.commit()
            sync(b, host_state(f.host_b), f)
            _put(b, f.host_b, [("P1", HOUR - timedelta(hours=3), 1, 1)])  # on the hour A also folds into
            assert retention.prune(b, f.host_b, NOW, 90, HOURLY).folded > 0
        finally:
            a.execute("COMMIT")
        assert all(at.astimezone(UTC).minute == 0 for _k, at, _r, _t in _rows(f, f.host_a))


def test_thinning_keeps_the_last_ok_cycle_before_a_failure_and_the_first_after(fleet: Fleet) -> None:  # noqa: F811
    """fleet_hosts.last_ok_at of a host that stopped succeeding (and `wgsyncd status` history) must
    not move back by up to an hour once its rows are thinned: an ok row next to a non-ok one stays."""
    f = fleet
    start = HOUR - timedelta(hours=4)
    status = ["ok"] * 31 + ["failed"] * 60 + ["ok"] * 29  # ok to :30, failing an hour, ok again
    rows = [(start + timedelta(minutes=m, seconds=5), s) for m, s in enumerate(status)]
    with f.connect(f.role_a) as a:
        sync(a, host_state(f.host_a), f)
        with a.transaction():
            for at, s in rows:
                a.execute(
                    "INSERT INTO sync_status (host_id, sync_id, started_at, finished_at, status, "
                    "config_rows_written, agent_version) "
                    "VALUES (%s, gen_random_uuid(), %s, %s, %s, 0, 'test')",
                    (f.host_a, at, at, s),
                )
        retention.prune(a, f.host_a, NOW, 90, HOURLY)
    kept = {r[0] for r in _status(f, f.host_a)}
    assert rows[30][0] in kept, "the last ok cycle before the failures"
    assert rows[91][0] in kept, "the first ok cycle after them"
    assert all(at in kept for at, s in rows if s != "ok")
    assert rows[29][0] not in kept and rows[100][0] not in kept  # plain ok rows inside a run: thinned
    with psycopg.connect(f.dsn(f.operator)) as op:
        last_ok = op.execute(
            "SELECT max(finished_at) FROM sync_status "
            "WHERE host_id = %s AND status = 'ok' AND started_at < %s",
            (f.host_a, rows[60][0]),
        ).fetchone()
    assert last_ok == (rows[30][0],)
