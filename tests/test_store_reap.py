"""`wgsyncd db reap`: a compromised host that holds a transaction open for ever is ended.

The attack is real: host A's own role lifts its idle and statement timeouts (any role
may) and keeps a transaction open, which holds back vacuum for every host's rows. The
operator's reaper ends it; nobody else's session is touched.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from tests.beds.roles import Fleet, hold_own_row
from wgsyncd.cli import main
from wgsyncd.store import reap
from wgsyncd.store.db import StoreError

pytestmark = pytest.mark.postgres


def _horizon_held_by(f: Fleet, role: str) -> bool:
    """Whether a session of ``role`` holds a transaction id back (what stops vacuum)."""
    with psycopg.connect(f.cluster.dsn(f.dbname), autocommit=True) as su:  # the bed's superuser
        row = su.execute(
            "SELECT bool_or(backend_xid IS NOT NULL OR backend_xmin IS NOT NULL) FROM pg_stat_activity "
            "WHERE usename = %s",
            (role,),
        ).fetchone()
    return bool(row and row[0])


def _alive(conn: psycopg.Connection[Any]) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def test_reap_ends_only_the_host_session_holding_a_transaction_open(synced: Fleet, tmp_path: Path) -> None:
    f = synced
    a = hold_own_row(f)
    b_idle = psycopg.connect(f.dsn(f.role_b), autocommit=True)  # host B, between cycles: no transaction
    op_tx = psycopg.connect(f.dsn(f.operator))  # an operator's long read: not a host, never ended
    op_tx.execute("SELECT count(*) FROM hosts")
    try:
        assert _horizon_held_by(f, f.role_a)  # the harm: every host's dead rows stay
        grant = "GRANT pg_read_all_stats, pg_signal_backend"
        with f.connect(f.operator) as op, pytest.raises(StoreError, match=grant):
            reap.stuck(op, 0, 3600)  # it would see nobody's state, so it says so
        f.cluster.admin(f'GRANT pg_read_all_stats TO "{f.operator}"')
        with f.connect(f.operator) as op:
            found = reap.stuck(op, 0, 3600)
            assert [(s.role, s.host_id, s.state) for s in found] == [
                (f.role_a, f.host_a, "idle in transaction")
            ]
            assert reap.end(op, found) == [
                f"could not end {found[0].describe()}: this role lacks pg_signal_backend"
            ]
            # a session judged in one transaction is left alone once it is in another
            moved = dataclasses.replace(found[0], xact_start=found[0].xact_start - timedelta(seconds=1))
        f.cluster.admin(f'GRANT pg_signal_backend TO "{f.operator}"')
        with f.connect(f.operator) as op:
            assert reap.end(op, [moved])[0].startswith("left alone (its transaction ended meanwhile)")
            assert _alive(a)
            # bounds not reached: nothing
            assert reap.stuck(op, 3600, 3600) == []
        cfg = tmp_path / "operator.toml"
        cfg.write_text(f'host_id = "operator-desk"\n[database]\ndsn = "{f.dsn(f.operator)}"\n')
        cli = ["--config", str(cfg), "db", "reap", "--idle-after", "0"]
        dry = CliRunner().invoke(main, [*cli, "--dry-run"])
        assert dry.exit_code == 0 and dry.output.startswith(
            f"would end session {found[0].pid} of role {f.role_a}"
        )
        assert _alive(a)
        res = CliRunner().invoke(main, [*cli, "--json"])
        assert res.exit_code == 0, res.output
        got = json.loads(res.output)
        assert [(r["pid"], r["host_id"]) for r in got] == [(found[0].pid, f.host_a)]
        assert got[0]["result"].startswith(
            f"ended session {found[0].pid} of role {f.role_a} (host {f.host_a})"
        )
        assert not _alive(a) and not _horizon_held_by(f, f.role_a)
        assert _alive(b_idle) and _alive(op_tx)
        again = CliRunner().invoke(main, cli)
        assert again.output == "no host session over the bounds\n"
    finally:
        for c in (a, b_idle, op_tx):
            c.close()
