"""The one-role-per-host fleet benchmark (tests/bench/fleet_roles.py): its arithmetic and
settings without root, and a tiny run end to end (real PostgreSQL, pgbouncer, SCRAM).

No speed is asserted (the figures live in README.md with their JSON); what is asserted
is what the modes are for: keep mode forks no backend per cycle and holds one per host,
churn mode forks one per cycle, and every host logged in as its own role.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.bench import fleet_roles as fr
from tests.bench import fleet_roles_setup as setup
from tests.bench.fleet_gen import host_conninfo


def test_role_names_passwords_and_conninfo_are_per_host() -> None:
    secret = "00" * 16
    assert setup.role_name(42) == "wgs_fleet_00042"
    assert setup.host_password(secret, 1) != setup.host_password(secret, 2)
    assert setup.host_password(secret, 1) != setup.host_password("11" * 16, 1)
    info = setup.role_conninfo("host=/s port=1 dbname=d", 7, secret)
    assert info == f"host=/s port=1 dbname=d user=wgs_fleet_00007 password={setup.host_password(secret, 7)}"
    # the generator: the shared DSN unless a role secret is given
    assert host_conninfo({"dsn": "host=/s dbname=d"}, 3) == b"host=/s dbname=d"
    assert host_conninfo({"dsn": "host=/s dbname=d", "role_secret": secret}, 3).endswith(
        f"user=wgs_fleet_00003 password={setup.host_password(secret, 3)}".encode()
    )


def test_defaults_run_the_target_rate_and_churn_must_be_shorter_than_the_interval(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = fr.parse_args([])
    assert args.hosts / args.interval == pytest.approx(10_000 / 60, rel=0.01)
    assert args.modes == ["keep", "churn", "cap"]
    keep, churn = fr.mode_settings("keep", args), fr.mode_settings("churn", args)
    assert keep["server_idle_timeout"] > args.interval > churn["server_idle_timeout"]
    assert keep["pool_size"] == churn["pool_size"] == 1
    assert keep["max_client_conn"] >= args.hosts
    cap = fr.mode_settings("cap", args)
    assert cap["server_idle_timeout"] > args.interval and 0 < cap["max_db_connections"] < args.hosts
    assert keep["max_db_connections"] == churn["max_db_connections"] == 0
    with pytest.raises(SystemExit):
        fr.parse_args(["--interval", "5", "--churn-idle-timeout", "5"])
    assert "shorter than --interval" in capsys.readouterr().err


def test_pgbouncer_ini_is_transaction_mode_with_scram_and_a_pool_per_role(tmp_path: Path) -> None:
    mode = {"pool_size": 1, "max_client_conn": 2100, "max_db_connections": 0, "server_idle_timeout": 2.5}
    ini = setup.pgbouncer_ini(tmp_path, 6432, "wg", "/run/pg", 5432, mode)
    lines = set(ini.splitlines())
    assert "wg = host=/run/pg port=5432 dbname=wg" in lines  # no user=: each client's own role
    assert {"pool_mode = transaction", "auth_type = hba", "server_idle_timeout = 2.5"} <= lines
    assert f"auth_hba_file = {tmp_path / 'hba.conf'}" in lines
    assert "local all all scram-sha-256" in setup.PGBOUNCER_HBA.splitlines()
    assert "scram-sha-256" in setup.POSTGRES_HBA and "+wgsyncd_host" in setup.POSTGRES_HBA


def _step(mode: str, **kw: float) -> dict[str, object]:
    base: dict[str, object] = {
        "mode": mode,
        "db_cpu_ms_per_cycle": 12.0,
        "pooler_cpu_ms_per_cycle": 0.3,
        "backends_per_cycle": 1.0 if mode == "churn" else 0.0,
        "server_idle_timeout": 2.0 if mode == "churn" else 60.0,
        "latency_p50_s": 0.05,
        "backend_memory": {"own_mean": 2 * 2**20},
    }
    base.update(kw)
    return base


def test_extrapolation_scales_cycle_costs_with_the_rate_and_idle_backends_with_hosts() -> None:
    churn = fr.extrapolate(_step("churn"), hosts=10_000, interval=60.0)
    rate = 10_000 / 60
    assert churn["cycles_per_s"] == pytest.approx(rate)
    assert churn["postgres_cores"] == pytest.approx(rate * 0.012)
    assert churn["pgbouncer_cores"] == pytest.approx(rate * 0.0003)
    assert churn["backends_forked_per_s"] == pytest.approx(rate)
    # a churned backend lives its cycle plus server_idle_timeout
    assert churn["server_connections"] == pytest.approx(rate * 2.05)
    assert churn["backend_memory_bytes"] == pytest.approx(rate * 2.05 * 2 * 2**20)
    keep = fr.extrapolate(_step("keep", db_cpu_ms_per_cycle=3.0), hosts=10_000, interval=60.0)
    assert keep["server_connections"] == 10_000 and keep["backends_forked_per_s"] == 0
    assert keep["backend_memory_bytes"] == 10_000 * 2 * 2**20
    assert keep["postgres_cores"] == pytest.approx(rate * 0.003)
    # twice the hosts: twice the rate, twice the idle backends
    assert fr.extrapolate(_step("keep"), hosts=20_000)["server_connections"] == 20_000
    cap = fr.extrapolate(_step("cap", max_db_connections=500), hosts=10_000)
    assert cap["server_connections"] == 500 and cap["backend_memory_bytes"] == 500 * 2 * 2**20


def test_a_churn_run_that_fell_behind_is_scaled_at_one_new_backend_per_cycle() -> None:
    keep = _step("keep", db_cpu_ms_per_cycle=4.0)
    behind = _step("churn", db_cpu_ms_per_cycle=10.0, backends_per_cycle=0.5)
    assert fr.new_backend_cpu_ms(behind, keep) == pytest.approx(12.0)  # (10 - 4) / 0.5
    x = fr.extrapolate(behind, hosts=6000, interval=60.0, keep=keep)
    assert x["postgres_cpu_ms_per_cycle"] == pytest.approx(16.0)  # 4 + 12
    assert x["postgres_cores"] == pytest.approx(100 * 0.016)
    assert x["backends_forked_per_s"] == pytest.approx(100)
    assert fr.new_backend_cpu_ms(_step("churn", backends_per_cycle=0.0), keep) == 0.0
    # its backends live server_idle_timeout + a cycle as long as keep mode's, not the backlog's
    assert x["server_connections"] == pytest.approx(100 * (2.0 + 0.05))
    assert fr.extrapolate(_step("churn", latency_p50_s=6.0), keep=keep)[
        "server_connections"
    ] == pytest.approx(10_000 / 60 * 2.05)
    # keep mode itself is scaled as measured
    assert fr.extrapolate(keep, hosts=6000, keep=keep)["postgres_cpu_ms_per_cycle"] == 4.0


def test_backend_memory_reads_smaps_of_live_pids_and_skips_ended_ones() -> None:
    mem = setup.backend_memory([os.getpid(), 2**22 + 1])  # the second pid cannot exist
    assert mem["backends"] == 1
    assert 0 < mem["private_total"] <= mem["rss_total"]
    assert mem["private_mean"] == mem["private_total"]
    assert mem["page_tables_total"] > 0 and mem["own_mean"] == mem["private_mean"] + mem["page_tables_mean"]
    assert setup.backend_memory([])["private_mean"] == 0


@pytest.mark.postgres
@pytest.mark.pgbouncer
def test_tiny_run_keep_holds_a_backend_per_host_and_churn_forks_one_per_cycle(tmp_path: Path) -> None:
    """6 hosts x 10 peers, 2 s interval, one interval per mode; cap: 2 server connections."""
    from tests.beds import unavailable
    from tests.beds.pgbouncer import missing_reason as pgbouncer_missing
    from tests.beds.postgres import binaries_missing

    reason = binaries_missing() or pgbouncer_missing()
    if reason:
        unavailable("fleet roles benchmark", reason)
    out = tmp_path / "roles.json"
    argv = ["--hosts=6", "--peers=10", "--interval=2", "--rounds=1", "--churn-idle-timeout=0.5",
            "--connects=40", "--cap=2", f"--out={out}"]  # fmt: skip
    # 40 bare sessions: ~100 ms of CPU, well above /proc's 10 ms tick (3 could read as 0)
    assert fr.main(argv) == 0
    res = json.loads(out.read_text())["fleet_roles"]
    assert res["populate"]["cycles"] == 6
    keep, churn, cap = res["modes"]
    for m in (keep, churn, cap):
        assert m["cycles"] == 6 and m["keeps_up"], m
        # /proc counts CPU in 10 ms ticks: six tiny cycles of one mode can read 0 (CI did once)
        assert m["db_cpu_ms_per_cycle"] >= 0 and m["wal_bytes_per_cycle"] > 0
    assert sum(m["db_cpu_s"] for m in (res["populate"], keep, churn, cap)) > 0
    assert keep["backends_per_cycle"] == 0
    assert keep["server_connections_at_end"] == keep["backend_memory"]["backends"] == 6
    assert keep["backend_memory"]["private_mean"] > 0
    assert churn["backends_per_cycle"] >= 0.9
    assert churn["server_connections_left_at_start"] == 0
    assert churn["connect_only_cpu_ms"] > 0
    assert churn["at_10000_hosts"]["backends_forked_per_s"] == pytest.approx(10_000 / 60)
    assert "new_backend_cpu_ms" in churn and "new_backend_cpu_ms" not in keep
    # cap: pgbouncer closes another pool's idle server connection to open one: bounded backends
    assert cap["server_connections_at_end"] <= 2 and cap["backends_per_cycle"] >= 0.5
    assert "10,000 hosts every 60 s" in fr.table(res)
