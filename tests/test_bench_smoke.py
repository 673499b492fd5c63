"""CI smoke run of the benchmark (issue 6): tiny sizes, every key present, numbers sane.

No target is asserted here (speed lives in the benchmark, not in timed tests); this
proves `python -m tests.bench` still runs end to end and its JSON keeps its shape.
"""

from __future__ import annotations

import json

import pytest

from tests.beds import unavailable
from tests.beds.postgres import binaries_missing
from tests.beds.wireguard import missing_reason

pytestmark = pytest.mark.postgres

SIZE_KEYS = {
    "n", "reps", "floor_cold_s", "floor_warm_s", "floor_runs", "floor_command", "first_sync_s",
    "first_sync_runs", "first_sync_rss_kib", "idle", "steady", "daemon_rss_kib", "rss_kib", "ratios",
    "idle_breakdown", "daemon_empty_db_rss_kib", "pyfloor_s", "pyfloor_runs",
}  # fmt: skip
CYCLE_KEYS = {
    "total_s",
    "collect_s",
    "write_s",
    "rows_written",
    "stats_rows",
    "traffic_rows",
    "round_trips",
    "runs",
}
RATIO_KEYS = {
    "first_sync_vs_floor", "idle_vs_floor", "idle_db_vs_floor", "steady_vs_floor", "steady_db_vs_floor",
    "rss_mb", "pyfloor_vs_floor", "first_sync_vs_pyfloor",
}  # fmt: skip
PHASE_KEYS = {
    "cycles", "wall_s", "cycles_per_s", "latency_p50_s", "latency_p99_s", "latency_mean_s", "rows_written",
    "rows_per_s", "round_trips_per_cycle", "db_cpu_s", "db_cpu_cores", "generator_cpu_s",
    "generator_cpu_cores",
}  # fmt: skip


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    """One tiny run: N=60 twice, 6 hosts x 40 peers at a 2 s interval."""
    reason = missing_reason() or binaries_missing()
    if reason:
        unavailable("benchmark", reason)
    from tests.bench.__main__ import main

    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    args = ["--sizes", "60", "--reps", "2", "--hosts", "6", "--host-peers", "40", "--interval", "2",
            "--probe", "2", "--workers", "2", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    return json.loads(out.read_text()), str(out)


def test_json_has_every_key(smoke: tuple[dict, str]) -> None:
    result, _ = smoke
    assert {"started_at", "command", "machine", "targets", "sizes", "multihost", "elapsed_s"} <= set(result)
    assert {"nproc", "mem_gib", "cpu_model", "postgres", "psycopg"} <= set(result["machine"])
    (size,) = result["sizes"]
    assert set(size) >= SIZE_KEYS
    assert set(size["idle"]) >= CYCLE_KEYS and set(size["steady"]) >= CYCLE_KEYS
    assert set(size["ratios"]) >= RATIO_KEYS
    mh = result["multihost"]
    for phase in ("populate", "capacity", "paced"):
        assert set(mh[phase]) >= PHASE_KEYS, phase
    assert {"keeps_up", "headroom", "required_cycles_per_s", "db_cpu_cores_at_required_rate"} <= set(mh)
    pooled = result["multihost_pgbouncer"]
    assert set(pooled) >= set(mh) | {"pool_size", "pool_wait_mean_ms"}
    for phase in ("populate", "capacity", "paced"):
        assert set(pooled[phase]) >= PHASE_KEYS | {"pooler_cpu_s", "pooler_cpu_cores"}, phase


def test_single_host_numbers_are_sane(smoke: tuple[dict, str]) -> None:
    (size,) = smoke[0]["sizes"]
    assert size["n"] == 60 and size["reps"] == 2
    assert len(size["floor_runs"]["cold"]) == 2 and len(size["first_sync_runs"]) == 2
    assert len(size["pyfloor_runs"]) == 2
    for key in ("floor_cold_s", "floor_warm_s", "first_sync_s", "pyfloor_s"):
        assert 0 < size[key] < 60, key
    # idle: nothing changed, so nothing written, in a bounded number of round trips
    assert size["idle"]["rows_written"] == 0 and size["idle"]["stats_rows"] == 0
    assert 0 < size["idle"]["round_trips"] < 30
    # steady: exactly the 10% of peers that got real traffic have new counters, no config rows
    assert size["steady"]["stats_rows"] == 6 and size["steady"]["rows_written"] == 0
    assert 0 < size["steady"]["write_s"] <= size["steady"]["total_s"]
    assert 20 < size["ratios"]["rss_mb"] < 1000
    assert 20 < size["ratios"]["daemon_empty_db_rss_mb"] <= size["ratios"]["rss_mb"]
    assert size["ratios"]["first_sync_vs_floor"] == pytest.approx(size["first_sync_s"] / size["floor_cold_s"])


@pytest.mark.parametrize("run", ["multihost", "multihost_pgbouncer"])
def test_multihost_numbers_are_sane(smoke: tuple[dict, str], run: str) -> None:
    mh = smoke[0][run]
    assert mh["via"] == ("pgbouncer" if run.endswith("pgbouncer") else "direct")
    assert mh["populate"]["cycles"] == 6
    assert mh["capacity"]["cycles"] > 6
    assert mh["paced"]["cycles"] == mh["paced"]["expected_cycles"] == 6
    assert mh["required_cycles_per_s"] == pytest.approx(3.0)
    assert mh["headroom"] == pytest.approx(mh["capacity"]["cycles_per_s"] / 3.0)
    for phase in ("populate", "capacity", "paced"):
        p = mh[phase]
        assert 0 < p["latency_p50_s"] <= p["latency_p99_s"] < 60, phase
        assert p["rows_written"] > 0 and p["db_cpu_s"] >= 0, phase
    # CPU is read in clock ticks (10 ms): 6 paced cycles of 40 peers may cost less than one,
    # but filling 6 hosts cannot
    assert mh["populate"]["db_cpu_s"] > 0
    # populate inserts every peer of every host: at least 6 x 40 peer rows
    assert mh["populate"]["rows_written"] >= 240
    # after it, every cycle moves exactly 10% of a host's counters: 4 stats + 4 traffic rows,
    # plus the host and status rows (a generator that broke write_cycle's contract shows here)
    for phase in ("capacity", "paced"):
        assert mh[phase]["rows_written"] == 10 * mh[phase]["cycles"], phase


def test_table_prints_ratios(smoke: tuple[dict, str]) -> None:
    from tests.bench.__main__ import table

    text = table(smoke[0])
    assert "first full sync" in text and "vs floor" in text and "keeps up:" in text and "headroom" in text
    assert "Python floor: the 3 sources" in text and "x the Python floor" in text
    assert "through pgbouncer: transaction mode, 2 server connections" in text
    assert "| multi-host, same run | direct | pgbouncer |" in text
