"""Many hosts, one database, no trust between them: real roles on a real PostgreSQL 15.

Host B is the attacker throughout (tests/beds/roles.py: the fleet). The catalog is
walked, not listed, so a table added later without forced row-level security fails.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.beds.roles import Fleet, all_tables, host_state, host_tables, owner_counts, sync
from wgsyncd import store
from wgsyncd.store import roles
from wgsyncd.store.db import StoreError
from wgsyncd.store.migrate import check_schema

pytestmark = pytest.mark.postgres

LOCK_MODES = (
    "ACCESS SHARE",
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    "ACCESS EXCLUSIVE",
)


# ---------------------------------------------------------------- the catalog


def advisory_key(namespace: str, value: str) -> int:
    """The advisory key 0.1's writer and migrations took (sha256-derived, guessable by any host)."""
    digest = hashlib.sha256(f"wgsyncd:{namespace}:{value}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def rls_problems(c: psycopg.Connection, owner: str) -> list[str]:
    """Every table with a host_id lacking forced row-level security or one of its policies."""
    problems = []
    for t in host_tables(c):
        row = c.execute(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = %s::regclass", (t,)
        ).fetchone()
        if row != (True, True):
            problems.append(f"{t}: row-level security must be ENABLED and FORCED")
        policies = {
            r[0]: r[1]
            for r in c.execute(
                "SELECT policyname, roles::text[] FROM pg_policies "
                "WHERE tablename = %s AND schemaname = current_schema()",
                (t,),
            ).fetchall()
        }
        for name, roles_ in (("wgsyncd_host_own", ["wgsyncd_host"]), ("wgsyncd_owner_all", [owner])):
            if policies.get(name) != roles_:
                problems.append(f"{t}: no policy {name} for {roles_[0]}")
        if "wgsyncd_operator_read" not in policies:
            problems.append(f"{t}: no policy wgsyncd_operator_read")
    return problems


def test_every_host_table_has_forced_rls_policies_and_hosts_hold_no_lock_granting_privilege(
    fleet: Fleet,
) -> None:
    with psycopg.connect(fleet.dsn(fleet.owner), autocommit=True) as c:
        assert {"hosts", "peers", "config_secrets", "sync_status", "host_roles"} <= set(host_tables(c))
        assert rls_problems(c, fleet.owner) == []
        for t in all_tables(c):
            for group in ("wgsyncd_host", "wgsyncd_reader", "wgsyncd_operator"):
                for priv in ("UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"):
                    held = c.execute("SELECT has_table_privilege(%s, %s, %s)", (group, t, priv)).fetchone()
                    assert held == (False,), f"{group} holds {priv} on {t}: it could LOCK the table"
            inserts = c.execute("SELECT has_table_privilege('wgsyncd_host', %s, 'INSERT')", (t,)).fetchone()
            assert inserts == (t in ("sync_status", "config_versions", "config_secrets"),), t
        reader_secrets = c.execute("SELECT has_table_privilege('wgsyncd_reader', 'config_secrets', 'SELECT')")
        assert reader_secrets.fetchone() == (False,)
        funcs = c.execute(
            "SELECT p.oid::regprocedure::text, p.proconfig, "
            "has_function_privilege('public', p.oid, 'EXECUTE') "
            "FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace AND p.prosecdef"
        ).fetchall()
        assert len(funcs) >= 8
        for name, conf, public in funcs:
            assert conf and any(x.startswith("search_path=") and "pg_temp" in x for x in conf), name
            assert not public, f"{name}: PUBLIC may execute it"


def test_a_table_added_later_without_policies_is_caught_and_the_helper_fixes_it(fleet: Fleet) -> None:
    with psycopg.connect(fleet.dsn(fleet.owner), autocommit=True) as c:
        c.execute("CREATE TABLE later_table (host_id text NOT NULL, x int)")
        assert rls_problems(c, fleet.owner) == [
            "later_table: row-level security must be ENABLED and FORCED",
            "later_table: no policy wgsyncd_host_own for wgsyncd_host",
            f"later_table: no policy wgsyncd_owner_all for {fleet.owner}",
            "later_table: no policy wgsyncd_operator_read",
        ]
        with pytest.raises(psycopg.errors.RaiseException, match="must ENABLE and FORCE"):
            c.execute("SELECT wgsyncd_secure_table('later_table', true)")  # RLS switched on first
        # what a later migration does: row-level security on and forced, then the helper
        c.execute("ALTER TABLE later_table ENABLE ROW LEVEL SECURITY")
        c.execute("ALTER TABLE later_table FORCE ROW LEVEL SECURITY")
        c.execute("SELECT wgsyncd_secure_table('later_table', true)")
        assert rls_problems(c, fleet.owner) == []


# ---------------------------------------------------------------- isolation


def test_host_b_cannot_read_or_change_host_a_rows_in_any_table(synced: Fleet) -> None:
    f = synced
    before = owner_counts(f, f.host_a)
    assert all(n > 0 for n, _ in before.values()), before  # host A has rows in every table
    with psycopg.connect(f.dsn(f.role_b)) as b:
        for t in host_tables(b):
            ident = sql.Identifier(t)
            b.rollback()
            if t == "host_roles":
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    b.execute(sql.SQL("SELECT 1 FROM {}").format(ident))
                b.rollback()
            else:
                seen = b.execute(sql.SQL("SELECT DISTINCT host_id FROM {}").format(ident)).fetchall()
                assert seen == [(f.host_b,)], f"{t}: host B sees {seen}"
            cols = [
                r[0]
                for r in b.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                    "AND NOT attisdropped ORDER BY attnum",
                    (t,),
                ).fetchall()
            ]
            b.rollback()
            # a complete, valid row copied from host B's own, only the host_id changed
            copy = sql.SQL(
                "INSERT INTO {t} ({cols}) SELECT {vals} FROM {t} WHERE host_id = %s LIMIT 1"
            ).format(
                t=ident,
                cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
                vals=sql.SQL(", ").join(
                    sql.Literal(f.host_a) if c == "host_id" else sql.Identifier(c) for c in cols
                ),
            )
            for stmt, params in (
                (copy, (f.host_b,)),
                (sql.SQL("UPDATE {} SET host_id = host_id WHERE host_id = %s").format(ident), (f.host_a,)),
                (sql.SQL("DELETE FROM {} WHERE host_id = %s").format(ident), (f.host_a,)),
                (sql.SQL("TRUNCATE {}").format(ident), None),
                (sql.SQL("SELECT 1 FROM {} FOR KEY SHARE").format(ident), None),
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    b.execute(stmt, params)
                b.rollback()
        # the owner's functions act only on B's binding, whatever host_id B names
        for call, params in (
            ("SELECT * FROM wgsyncd_begin_cycle(%s, 'x', 'x', gen_random_uuid(), NULL)", (f.host_a,)),
            ("SELECT wgsyncd_mark_removed(%s, ARRAY['wg0'], NULL)", (f.host_a,)),
            ("SELECT * FROM wgsyncd_prune(%s, now() + interval '1 day', 100000)", (f.host_a,)),
            ("SELECT wgsyncd_put_head(%s, 99, repeat('f', 64), now() + interval '1 day', 'x')", (f.host_a,)),
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match=f"bound to host_id {f.host_b}"):
                b.execute(call, params)
            b.rollback()
    assert owner_counts(f, f.host_a) == before


def test_host_cannot_sync_as_another_host(synced: Fleet) -> None:
    before = owner_counts(synced, synced.host_a)
    with synced.connect(synced.role_b) as b, pytest.raises(StoreError) as err:
        sync(b, host_state(synced.host_a, counters=9999), synced)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"role {synced.role_b} is bound to host_id {synced.host_b}" in msg and synced.host_a in msg
    assert owner_counts(synced, synced.host_a) == before


def test_host_cannot_run_ddl_or_migrations(synced: Fleet, tmp_path: Path) -> None:
    with psycopg.connect(synced.dsn(synced.role_b)) as b:
        for stmt in (
            "CREATE TABLE evil (x int)",
            "CREATE FUNCTION wgsyncd_bound_host_x() RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$",
            "ALTER TABLE peers ADD COLUMN evil int",
            "ALTER TABLE peers DISABLE ROW LEVEL SECURITY",
            "DROP POLICY wgsyncd_host_own ON peers",
            "CREATE INDEX evil ON peers (name)",
            "DROP TABLE sync_status",
            "INSERT INTO host_roles (role_name, host_id) VALUES (current_user, 'x')",
            "SELECT wgsyncd_secure_table('peers', true)",
        ):
            with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedFunction)):
                b.execute(stmt)
            b.rollback()
    with synced.connect(synced.role_b) as b:
        with pytest.raises(StoreError, match="permission denied"):
            store.migrate(b)
        extra = tmp_path / "m"
        extra.mkdir()
        from wgsyncd.store.migrate import MIGRATIONS_DIR

        for p in MIGRATIONS_DIR.glob("*.sql"):
            (extra / p.name).write_text(p.read_text())
        (extra / "0999_evil.sql").write_text("ALTER TABLE peers DISABLE ROW LEVEL SECURITY;")
        with pytest.raises(StoreError, match="permission denied"):
            store.migrate(b, extra)


def test_groups_connect_here_without_public_and_a_dba_closes_the_other_databases(fleet: Fleet) -> None:
    # roles are cluster-wide: a host role could connect to every database PUBLIC may;
    # 0003 grants CONNECT here to the groups, so the DBA can revoke it from PUBLIC elsewhere
    f = fleet
    f.cluster.admin(f'REVOKE CONNECT ON DATABASE "{f.dbname}" FROM PUBLIC')
    for role in (f.role_a, f.operator, f.reader):
        with psycopg.connect(f.dsn(role)) as c:
            assert c.execute("SELECT current_database()").fetchone() == (f.dbname,)
    with f.connect(f.role_a) as a:
        sync(a, host_state(f.host_a), f)
    other = psycopg.conninfo.conninfo_to_dict(f.cluster.create_database())["dbname"]
    f.cluster.admin(f'REVOKE CONNECT ON DATABASE "{other}" FROM PUBLIC')
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(f.cluster.dsn(str(other), user=f.role_a))


def test_host_b_cannot_block_host_a_with_any_lock_it_may_take(synced: Fleet) -> None:
    f = synced
    b = psycopg.connect(f.dsn(f.role_b))
    held: list[str] = []
    try:
        # every table, every mode: keep each lock B obtains for the rest of its transaction
        for t in all_tables(b):
            for mode in LOCK_MODES:
                b.execute("SAVEPOINT s")
                try:
                    b.execute(sql.SQL("LOCK TABLE {} IN " + mode + " MODE NOWAIT").format(sql.Identifier(t)))
                    held.append(f"{t}:{mode}")
                    b.execute("RELEASE SAVEPOINT s")
                except psycopg.errors.InsufficientPrivilege:
                    b.execute("ROLLBACK TO SAVEPOINT s")
            for lock in ("FOR UPDATE", "FOR NO KEY UPDATE", "FOR SHARE", "FOR KEY SHARE"):
                b.execute("SAVEPOINT s")
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    b.execute(sql.SQL("SELECT 1 FROM {} " + lock).format(sql.Identifier(t)))
                b.execute("ROLLBACK TO SAVEPOINT s")
        # the advisory keys wgsyncd used to serialise on, in both scopes
        for key in (advisory_key("host", f.host_a), advisory_key("migrate", "schema")):
            b.execute("SELECT pg_advisory_xact_lock(%s), pg_advisory_lock(%s)", (key, key))
        strong = [h for h in held if not h.endswith((":ACCESS SHARE", ":ROW EXCLUSIVE"))]
        assert strong == [], f"host B took {strong}"
        assert "sync_status:ROW EXCLUSIVE" in held and "peers:ACCESS SHARE" in held
        # host A, lock_timeout 1 s: a changing cycle, a failure record, a prune, a status read
        with f.connect(f.role_a, statement_timeout=2.0) as a:
            state = host_state(f.host_a, peers=25, counters=7777)
            state.interfaces["wg0"].peers.popitem()
            rep = sync(a, state, f)
            assert rep.total_config_rows_written > 0 and rep.config_version is not None
            store.record_failure(a, f.host_a, uuid.uuid4(), datetime.now(UTC), "test failure", "test")
            store.prune(a, f.host_a, datetime.now(UTC) + timedelta(days=1), 90)
            assert store.status(a, f.host_a, limit=1)[0].status == "failed"
            assert check_schema(a)
    finally:
        b.close()


def test_two_agents_of_one_host_queue_on_its_row_and_the_wait_is_bounded_and_named(synced: Fleet) -> None:
    f = synced
    first = f.connect(f.role_a, statement_timeout=2.0)
    second = f.connect(f.role_a, statement_timeout=2.0)
    try:
        first.execute("SELECT * FROM wgsyncd_begin_cycle(%s, 'h', 'v', gen_random_uuid(), NULL)", (f.host_a,))
        with pytest.raises(
            StoreError, match="LockNotAvailable: canceling statement due to lock timeout"
        ) as err:
            sync(second, host_state(f.host_a), f)
        assert 'in relation "hosts"' in str(err.value), err.value
        first.rollback()
        sync(second, host_state(f.host_a), f)  # free again
    finally:
        first.close()
        second.close()


# ---------------------------------------------------------------- identity


def test_a_second_machine_with_the_same_host_id_is_refused_naming_both(fleet: Fleet) -> None:
    f = fleet
    with f.connect(f.role_a) as a:
        sync(a, host_state(f.host_a), f, machine_fp="aaaa1111")
        before = owner_counts(f, f.host_a)
        with pytest.raises(StoreError) as err:
            sync(a, host_state(f.host_a, counters=42), f, machine_fp="bbbb2222")
        assert "aaaa1111" in str(err.value) and "bbbb2222" in str(err.value)
        assert "two machines share one host_id" in str(err.value)
        assert owner_counts(f, f.host_a) == before
        sync(a, host_state(f.host_a), f, machine_fp="aaaa1111")  # the first machine goes on
    with f.connect(f.owner) as o:
        roles.remove_host(o, f.host_a)
        roles.add_host(o, f.host_a, f.role_a)
    with f.connect(f.role_a) as a:
        sync(a, host_state(f.host_a, counters=43), f, machine_fp="bbbb2222")  # after the operator's reset


def test_a_dba_table_lock_ends_host_a_cycle_at_lock_timeout_naming_the_table(synced: Fleet) -> None:
    f = synced
    dba = psycopg.connect(f.dsn(f.owner))
    try:
        dba.execute("LOCK TABLE peer_stats IN ACCESS EXCLUSIVE MODE")  # an ALTER TABLE in progress
        with f.connect(f.role_a, statement_timeout=2.0) as a, pytest.raises(StoreError) as err:
            sync(a, host_state(f.host_a, counters=31337), f)
        assert "lock timeout" in str(err.value) and "peer_stats" in str(err.value), err.value
        with f.connect(f.owner, statement_timeout=2.0) as o, pytest.raises(StoreError) as err2:
            dba.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
            store.migrate(o)
        assert "schema_migrations" in str(err2.value), err2.value
    finally:
        dba.close()
