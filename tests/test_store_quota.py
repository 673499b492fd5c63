"""Per-host quotas (migration 0008): a compromised host cannot fill the shared database.

Real roles on a real PostgreSQL (tests/beds/roles.py): host B is the attacker. Each
attack is reproduced (B writes all it can through the grants and functions every host
has), then shown to stop at B's quota with a clear error while host A goes on syncing.
"""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.beds.postgres import synthetic_state
from tests.beds.roles import Fleet, host_state, sync
from wgsyncd.store import StoreError, quota

pytestmark = pytest.mark.postgres

MiB = 2**20


def usage(f: Fleet, host_id: str) -> int:
    """Bytes charged to ``host_id`` today, as the owner reads them."""
    with psycopg.connect(f.dsn(f.owner), autocommit=True) as c:
        row = c.execute(
            "SELECT bytes FROM host_usage WHERE host_id = %s AND day = (now() AT TIME ZONE 'UTC')::date",
            (host_id,),
        ).fetchone()
    return row[0] if row else 0


def set_quota(f: Fleet, host_id: str, **values: int) -> str:
    with psycopg.connect(f.dsn(f.owner), autocommit=True) as c:
        return quota.set_quota(c, host_id, values)


def status_row(host_id: str, errors: list[str]) -> tuple[Any, ...]:
    return (host_id, uuid.uuid4(), errors)


INSERT_STATUS = (
    "INSERT INTO sync_status (host_id, sync_id, started_at, finished_at, status, errors, agent_version) "
    "VALUES (%s, %s, now(), now(), 'failed', %s, 'x')"
)


def test_a_host_flooding_its_own_append_only_rows_stops_at_its_daily_quota(synced: Fleet) -> None:
    f = synced
    set_quota(f, f.host_b, max_bytes_per_day=usage(f, f.host_b) + 3 * MiB)
    # sync_status.errors has no length CHECK; random text, so TOAST cannot compress it away
    # (what an attacker fills a disk with: compressible text would be charged in full anyway)
    blob = [base64.b64encode(os.urandom(375_000)).decode()]
    written = 0
    with psycopg.connect(f.dsn(f.role_b), autocommit=True) as b:
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded) as err:
            for _ in range(100):
                b.execute(INSERT_STATUS, status_row(f.host_b, blob))
                written += 1
        assert 4 <= written <= 6  # ~500 kB each against 3 MiB (charged as sized before TOAST compression)
        msg = str(err.value).splitlines()[0]
        assert f"host {f.host_b} wrote" in msg and "over its quota" in msg and "sync_status" in msg
        assert "wgsyncd db quota" in (err.value.diag.message_hint or "")
        # the failed statement left nothing (its charge neither); the next big one fails the same way
        assert b.execute("SELECT count(*) FROM sync_status WHERE errors = %s", (blob,)).fetchone() == (
            written,
        )
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
            b.execute(INSERT_STATUS, status_row(f.host_b, blob))
    set_quota(f, f.host_b, max_bytes_per_day=usage(f, f.host_b))  # B's budget is spent: no cycle fits
    with f.connect(f.role_b) as b, pytest.raises(StoreError, match="over its quota"):
        sync(b, host_state(f.host_b, counters=9000), f)
    # host A is untouched: its own budget, its own row lock
    with f.connect(f.role_a) as a:
        assert sync(a, host_state(f.host_a, counters=9000), f).status == "ok"


def test_a_host_cannot_charge_another_host_or_edit_quotas_or_usage(synced: Fleet) -> None:
    f = synced
    before = usage(f, f.host_a)
    with psycopg.connect(f.dsn(f.role_b)) as b:
        for stmt, params in (
            ("UPDATE host_quotas SET max_bytes_per_day = 0", None),
            ("INSERT INTO host_quotas VALUES (%s, 1, 1, 1)", (f.host_b,)),
            ("DELETE FROM host_usage", None),
            ("UPDATE host_usage SET bytes = 0", None),
            ("INSERT INTO host_usage VALUES (%s, current_date, 1)", (f.host_a,)),
            ("LOCK TABLE host_usage IN ACCESS EXCLUSIVE MODE", None),
            ("LOCK TABLE host_quotas IN ACCESS EXCLUSIVE MODE", None),
            ("SELECT wgsyncd_charge()", None),
        ):
            with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.FeatureNotSupported)):
                b.execute(stmt, params)
            b.rollback()
        # a host reads its own quota and usage, nobody else's (row-level security)
        assert b.execute("SELECT DISTINCT host_id FROM host_quotas").fetchall() == [(f.host_b,)]
        assert b.execute("SELECT DISTINCT host_id FROM host_usage").fetchall() == [(f.host_b,)]
    assert usage(f, f.host_a) == before


def test_live_peers_and_interfaces_stop_at_the_quota_removed_ones_do_not_count(synced: Fleet) -> None:
    f = synced
    set_quota(f, f.host_b, max_peers=25, max_interfaces=1)
    with f.connect(f.role_b) as b:
        sync(b, host_state(f.host_b, peers=25), f)  # 20 -> 25 peers: at the quota, allowed
        with pytest.raises(StoreError) as err:
            sync(b, host_state(f.host_b, peers=26), f)
        assert f"host {f.host_b} would hold 26 peers, over its quota of 25" in str(err.value)
        assert "\n" not in str(err.value)
    set_quota(f, f.host_b, max_peers=1000)
    with f.connect(f.role_b) as b:
        sync(b, host_state(f.host_b, peers=26), f)
    with psycopg.connect(f.dsn(f.owner), autocommit=True) as c:
        live = c.execute(
            "SELECT count(*) FROM peers WHERE host_id = %s AND removed_at IS NULL", (f.host_b,)
        ).fetchone()
    assert live == (26,)
    two = synthetic_state(f.host_b, interfaces=2, peers=10, counters=1000)
    with f.connect(f.role_b) as b, pytest.raises(StoreError, match="would hold 2 interfaces, over its quota"):
        sync(b, two, f)  # type: ignore[arg-type]


def test_an_honest_cycle_is_charged_what_it_writes_and_an_idle_one_little(synced: Fleet) -> None:
    f = synced
    before = usage(f, f.host_a)
    with f.connect(f.role_a) as a:
        sync(a, host_state(f.host_a, peers=200, counters=7000), f)  # 180 new peers, a new version
        first = usage(f, f.host_a) - before
        sync(a, host_state(f.host_a, peers=200, counters=7000), f)  # nothing changed
        idle = usage(f, f.host_a) - before - first
    assert 50_000 < first < 2 * MiB, first
    assert 0 < idle < first / 20, (idle, first)


def test_old_usage_days_go_with_a_hosts_first_write_of_a_day(synced: Fleet) -> None:
    f = synced
    with psycopg.connect(f.dsn(f.owner), autocommit=True) as c:
        c.execute("DELETE FROM host_usage WHERE host_id = %s", (f.host_b,))
        c.execute(
            "INSERT INTO host_usage VALUES (%s, (now() AT TIME ZONE 'UTC')::date - 41, 5), "
            "(%s, (now() AT TIME ZONE 'UTC')::date - 40, 6)",
            (f.host_b, f.host_b),
        )
    with f.connect(f.role_b) as b:
        sync(b, host_state(f.host_b, counters=6000), f)
    with psycopg.connect(f.dsn(f.owner), autocommit=True) as c:
        days = c.execute(
            "SELECT (now() AT TIME ZONE 'UTC')::date - day FROM host_usage WHERE host_id = %s ORDER BY 1",
            (f.host_b,),
        ).fetchall()
    assert days == [(0,), (40,)]


def test_db_quota_cli_lists_sets_and_clears(synced: Fleet, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from wgsyncd.cli import main

    f = synced
    cfg = tmp_path / "owner.toml"
    cfg.write_text(f'host_id = "operator-desk"\n[database]\ndsn = "{f.dsn(f.owner)}"\n')

    def cli(*args: str, code: int = 0) -> str:
        res = CliRunner().invoke(main, ["--config", str(cfg), "db", "quota", *args])
        assert res.exit_code == code, res.output
        return res.output

    out = cli()
    assert out.startswith("default: interfaces 1,000, peers 250,000, 16.0 GiB a day")
    line_b = next(ln for ln in out.splitlines() if ln.startswith(f.host_b))
    assert " own " in line_b and "peers 20/1,000" in line_b and "today " in line_b
    assert cli(f.host_a, "--max-bytes-per-day", "2G").strip() == (
        f"host {f.host_a}: max_interfaces 1,000, max_peers 1,000, max_bytes_per_day 2,147,483,648"
    )
    assert "own quota removed; the default applies" in cli(f.host_a, "--clear")
    assert "default: max_interfaces 1,000, max_peers 10" in cli("--default", "--max-peers", "10")
    line_a = next(ln for ln in cli().splitlines() if ln.startswith(f.host_a))
    assert " default " in line_a and "peers 20/10!" in line_a
    assert "not a size" in cli(f.host_a, "--max-bytes-per-day", "lots", code=2)
    assert "name the HOST_ID" in cli("--max-peers", "5", code=2)
    doc = cli(f.host_b, "--json")
    assert f'"host_id": "{f.host_b}"' in doc and '"max_peers": 1000' in doc
    # the operator reads quotas but cannot change them
    op = tmp_path / "operator.toml"
    op.write_text(f'host_id = "operator-desk"\n[database]\ndsn = "{f.dsn(f.operator)}"\n')
    res = CliRunner().invoke(main, ["--config", str(op), "db", "quota", f.host_b, "--max-peers", "1"])
    assert res.exit_code == 1 and "permission denied" in res.output.lower()


def test_removed_peers_brought_back_by_an_upsert_count_against_the_live_cap(synced: Fleet) -> None:
    """The attack: fill the cap, let the peers be marked removed, fill it with others, then
    upsert the first ones again (an UPDATE of removed rows, not an INSERT)."""
    f = synced
    set_quota(f, f.host_b, max_peers=25)
    half = host_state(f.host_b, peers=50)
    iface = next(iter(half.interfaces.values()))
    for key in list(iface.peers)[:25]:
        del iface.peers[key]
    with f.connect(f.role_b) as b:
        sync(b, host_state(f.host_b, peers=25), f)
        sync(b, half, f)  # the first 25 removed, 25 others live: at the cap (removals go first)
        with pytest.raises(StoreError, match="would hold 50 peers, over its quota of 25"):
            sync(b, host_state(f.host_b, peers=50), f)  # the first 25 brought back


def test_rows_a_host_rewrites_uncharged_every_cycle_are_bounded_in_size(synced: Fleet) -> None:
    f = synced
    with psycopg.connect(f.dsn(f.role_b)) as b:
        for iface_id, total in (("x" * 100_000, 1), ("boot:ns:7", 10**40)):
            with pytest.raises(psycopg.errors.CheckViolation, match="peer_stats_bounded"):
                b.execute(
                    "SELECT wgsyncd_put_stats(%s, ARRAY['wg0'], ARRAY['k'], ARRAY[now()], ARRAY[1::bigint], "
                    "ARRAY[1::bigint], ARRAY[%s::numeric], ARRAY[1::numeric], ARRAY[now()], ARRAY[%s], "
                    "'{}', '{}', '{}', '{}', '{}')",
                    (f.host_b, total, iface_id),
                )
            b.rollback()
        with pytest.raises(psycopg.errors.CheckViolation, match="hosts_fp_length"):
            b.execute(
                "SELECT * FROM wgsyncd_begin_cycle(%s, 'h', 'v', gen_random_uuid(), %s)",
                (f.host_b, "f" * 1000),
            )


def table_bytes(f: Fleet, table: str) -> int:
    """Heap, TOAST and indexes of ``table`` on disk."""
    with psycopg.connect(f.dsn(f.owner), autocommit=True) as c:
        return c.execute("SELECT pg_total_relation_size(%s::regclass)", (table,)).fetchone()[0]  # type: ignore[index]


FLOOD = (
    "INSERT INTO sync_status (host_id, sync_id, started_at, finished_at, status, errors, agent_version) "
    "SELECT %s, gen_random_uuid(), now(), now(), 'failed', ARRAY[(SELECT string_agg(md5(random()::text "
    "|| g || i), '') FROM generate_series(1, 32) i)], 'x' FROM generate_series(1, 40000) g"
)


def test_one_huge_statement_stops_at_the_quota_before_its_rows_reach_the_disk(synced: Fleet) -> None:
    """The attack (review): one INSERT ... SELECT of 40,000 incompressible rows, or one
    function call with huge arrays. A check after the statement fails it only once every
    row, TOAST page, index entry and WAL record is written; the disk keeps the peak."""
    f = synced
    set_quota(f, f.host_b, max_bytes_per_day=usage(f, f.host_b) + MiB)
    before = {t: table_bytes(f, t) for t in ("sync_status", "peers")}
    with psycopg.connect(f.dsn(f.role_b), autocommit=True) as b:
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded, match="over its quota"):
            b.execute(FLOOD, (f.host_b,))
        keys = [base64.b64encode(os.urandom(32)).decode() for _ in range(2000)]
        names = [base64.b64encode(os.urandom(3000)).decode() for _ in keys]
        cols = [["wg0"] * len(keys), keys, names] + [[None] * len(keys)] * 12
        with pytest.raises(
            psycopg.errors.ConfigurationLimitExceeded, match=r"would write .* wgsyncd_put_peers"
        ):
            b.execute(
                "SELECT wgsyncd_put_peers(%s, " + ", ".join(["%s::text[]"] * 15) + ")", (f.host_b, *cols)
            )
    grew = {t: table_bytes(f, t) - n for t, n in before.items()}
    assert grew["sync_status"] < 2 * MiB and grew["peers"] < 256 * 1024, grew


def test_the_host_functions_run_only_through_their_checking_wrappers(synced: Fleet) -> None:
    f = synced
    with psycopg.connect(f.dsn(f.role_b)) as b:
        for name in ("put_interfaces", "put_peers", "put_server_keys", "put_stats"):
            held = b.execute(
                "SELECT bool_or(has_function_privilege(p.oid, 'EXECUTE')) FROM pg_proc p WHERE proname = %s",
                (f"wgsyncd_{name}_unchecked",),
            ).fetchone()
            assert held == (False,), name
