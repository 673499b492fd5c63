"""Many hosts, one database, no trust between them: real roles on a real PostgreSQL 15.

The database is owned by a non-superuser role (row-level security applies to it,
as in a real deployment); host A and host B each get a LOGIN role bound to their
host_id, plus an operator and a reader. Host B is the attacker throughout.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.beds.postgres import PgCluster, synthetic_state
from wgsyncd import secrets, store
from wgsyncd.config import DatabaseConfig
from wgsyncd.state import Drift, DriftKind, HostState, Source
from wgsyncd.store import roles, versions
from wgsyncd.store.db import StoreError, advisory_key
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


@dataclass
class Fleet:
    """One owned database with two bound hosts, an operator and a reader."""

    cluster: PgCluster
    dbname: str
    owner: str
    host_a: str
    host_b: str
    role_a: str
    role_b: str
    operator: str
    reader: str
    recovery_public: str
    recovery_file: str

    def dsn(self, user: str) -> str:
        """The database as ``user`` (trust auth in the bed)."""
        return self.cluster.dsn(self.dbname, user=user)

    def connect(self, user: str, statement_timeout: float = 20.0) -> psycopg.Connection[Any]:
        """A store connection (timeouts, lock_timeout = statement_timeout / 2) as ``user``."""
        return store.connect(
            DatabaseConfig(dsn=self.dsn(user), connect_timeout=5.0, statement_timeout=statement_timeout)
        )


@pytest.fixture
def fleet(pg_cluster: PgCluster, tmp_path: Path) -> Iterator[Fleet]:
    """Migrate as the owner, then add-host A and B, add-operator, add-reader."""
    dsn, owner = pg_cluster.create_owned_database()
    sfx = uuid.uuid4().hex[:8]
    keys = secrets.init_recovery(str(tmp_path / "recovery.key"))
    f = Fleet(
        pg_cluster,
        psycopg.conninfo.conninfo_to_dict(dsn)["dbname"],
        owner,
        f"host-a-{sfx}",
        f"host-b-{sfx}",
        f"wgs_a_{sfx}",
        f"wgs_b_{sfx}",
        f"wgs_op_{sfx}",
        f"wgs_ro_{sfx}",
        keys.public,
        str(tmp_path / "recovery.key"),
    )
    with f.connect(owner) as conn:
        store.migrate(conn)
        assert "bound to role" in roles.add_host(conn, f.host_a, f.role_a)
        roles.add_host(conn, f.host_b, f.role_b)
        roles.add_member(conn, f.operator, roles.OPERATOR_GROUP)
        roles.add_member(conn, f.reader, roles.READER_GROUP)
    yield f


def sync(conn: psycopg.Connection[Any], state: HostState, fleet: Fleet, **kw: Any) -> store.WriteReport:
    """One cycle with a fresh sync id, secrets sealed to the fleet's recovery key."""
    return store.write_cycle(
        conn,
        state,
        sync_id=uuid.uuid4(),
        started_at=datetime.now(UTC),
        agent_version="test",
        recovery_public_key=fleet.recovery_public,
        **kw,
    )


def host_state(host_id: str, peers: int = 20, counters: int = 1000) -> HostState:
    """A small synthetic host with keys, conf text and counters."""
    return synthetic_state(host_id, interfaces=1, peers=peers, counters=counters)  # type: ignore[return-value]


def host_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Every table of the schema with a host_id column: the catalog, not a list in the test."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
        "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') "
        "AND a.attname = 'host_id' AND NOT a.attisdropped ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def all_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Every table of the schema."""
    rows = conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
        "AND relkind IN ('r', 'p') ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def owner_counts(fleet: Fleet, host_id: str) -> dict[str, Any]:
    """Per table: the host's rows as the owner sees them (a digest of their text)."""
    with psycopg.connect(fleet.dsn(fleet.owner), autocommit=True) as c:
        out = {}
        for t in host_tables(c):
            q = sql.SQL(
                "SELECT count(*), md5(string_agg(x::text, ',' ORDER BY x::text)) FROM {} x WHERE host_id = %s"
            )
            out[t] = c.execute(q.format(sql.Identifier(t)), (host_id,)).fetchone()
        return out


@pytest.fixture
def synced(fleet: Fleet) -> Fleet:
    """Host A and host B each synced twice through their own roles (rows in every table)."""
    for host, role in ((fleet.host_a, fleet.role_a), (fleet.host_b, fleet.role_b)):
        with fleet.connect(role) as conn:
            sync(conn, host_state(host), fleet)
            sync(conn, host_state(host, counters=5000), fleet)
            with conn.transaction():
                assert conn.execute("SELECT wgsyncd_bound_host()").fetchone() == (host,)
    return fleet


# ---------------------------------------------------------------- the catalog


def test_every_host_table_has_forced_rls_policies_and_hosts_hold_no_lock_granting_privilege(
    fleet: Fleet,
) -> None:
    with psycopg.connect(fleet.dsn(fleet.owner), autocommit=True) as c:
        tables = host_tables(c)
        assert {"hosts", "peers", "config_secrets", "sync_status", "host_roles"} <= set(tables)
        for t in tables:
            row = c.execute(
                "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = %s::regclass", (t,)
            ).fetchone()
            assert row == (True, True), f"{t}: row-level security must be ENABLED and FORCED"
            policies = {
                r[0]: r[1]
                for r in c.execute(
                    "SELECT policyname, roles::text[] FROM pg_policies "
                    "WHERE tablename = %s AND schemaname = current_schema()",
                    (t,),
                ).fetchall()
            }
            assert policies.get("wgsyncd_host_own") == ["wgsyncd_host"], f"{t}: no host policy"
            assert policies.get("wgsyncd_owner_all") == [fleet.owner], f"{t}: no owner policy"
            assert "wgsyncd_operator_read" in policies, t
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


def test_add_host_is_idempotent_and_refuses_rebinding(fleet: Fleet) -> None:
    f = fleet
    with f.connect(f.owner) as o:
        assert "bound to role" in roles.add_host(o, f.host_a, f.role_a)
        assert "(role created)" not in roles.add_host(o, f.host_a, f.role_a)
        with pytest.raises(StoreError, match=f"host_id {f.host_a} is already bound to role {f.role_a}"):
            roles.add_host(o, f.host_a, f.role_b)
        with pytest.raises(StoreError, match=f"role {f.role_a} is already bound to host_id {f.host_a}"):
            roles.add_host(o, "host-c", f.role_a)
        with pytest.raises(StoreError, match="role: must be"):
            roles.add_host(o, "host-c", "x" * 64)
        listed = {h.host_id: h.role_name for h in roles.hosts(o)}
        assert listed[f.host_a] == f.role_a and listed[f.host_b] == f.role_b
        assert "unbound" in roles.remove_host(o, f.host_b)
    with f.connect(f.role_b) as b, pytest.raises(StoreError, match="permission denied"):
        sync(b, host_state(f.host_b), f)


def test_operator_cli_commands_are_not_allowed_to_hosts(fleet: Fleet) -> None:
    with fleet.connect(fleet.role_b) as b, pytest.raises(StoreError, match="add-host"):
        roles.add_host(b, "host-x", "wgs_x_role")


def test_password_is_set_as_a_scram_verifier_never_in_clear(fleet: Fleet) -> None:
    v = roles.scram_verifier("pencil", salt=b"0123456789abcdef", iterations=4096)
    assert v.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$") and "pencil" not in v
    with fleet.connect(fleet.owner) as o:
        roles.add_member(o, fleet.operator, roles.OPERATOR_GROUP, password="correct horse")
    with psycopg.connect(fleet.cluster.dsn(fleet.dbname), autocommit=True) as su:
        stored = su.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (fleet.operator,)
        ).fetchone()
    assert stored is not None and stored[0].startswith("SCRAM-SHA-256$4096:")
    assert "correct horse" not in stored[0]


# ---------------------------------------------------------------- operator and reader


def test_operator_reads_every_host_and_restores_host_a_but_cannot_write(
    synced: Fleet, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from wgsyncd import restore
    from wgsyncd.cli import main

    f = synced
    cfg = tmp_path / "operator.toml"
    cfg.write_text(f'host_id = "operator-desk"\n[database]\ndsn = "{f.dsn(f.operator)}"\n')
    for args in (
        ["status", "--host", f.host_a, "--json"],
        ["history", "--host", f.host_a, "--json"],
        ["restore", "--host", f.host_a, "--recovery-key", f.recovery_file, "--to-dir", str(tmp_path / "r")],
    ):
        res = CliRunner().invoke(main, ["--config", str(cfg), *args])
        assert res.exit_code == 0, (args, res.output)
        assert f.host_a in res.output or '"version": 1' in res.output
    assert (tmp_path / "r" / "wg0.conf").read_text().startswith("[Interface]")
    with f.connect(f.operator) as op:
        hosts = {r.host_id for r in store.status(op, limit=100)}
        assert {f.host_a, f.host_b} <= hosts
        assert store.status(op, f.host_a)[0].host_id == f.host_a
        assert [v.version for v in versions.list_versions(op, f.host_a)] == [1]
        loaded = restore.load(op, f.host_a, recovery_key_file=f.recovery_file)
        assert loaded.host_id == f.host_a and loaded.without_secrets == []
        assert loaded.interfaces["wg0"].private_key is not None
        assert {h.host_id for h in roles.hosts(op)} >= {f.host_a, f.host_b}
        with pytest.raises(StoreError, match="permission denied"):
            sync(op, host_state(f.host_a), f)


def test_reader_sees_public_tables_of_all_hosts_never_sealed_secrets(synced: Fleet) -> None:
    f = synced
    with psycopg.connect(f.dsn(f.reader)) as r:
        got = r.execute("SELECT count(DISTINCT host_id) FROM peers").fetchone()
        assert got is not None and got[0] >= 2
        for t in ("config_secrets", "host_roles"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                r.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(t)))
            r.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            r.execute("SELECT * FROM wgsyncd_begin_cycle('x', 'x', 'x', gen_random_uuid(), NULL)")


# ---------------------------------------------------------------- schema version


def test_host_refuses_a_schema_older_or_newer_than_it_understands(
    fleet: Fleet, pg_cluster: PgCluster
) -> None:
    from wgsyncd.store.migrate import available

    want = available()[-1].version
    with fleet.connect(fleet.role_a) as a:
        assert check_schema(a) == want
    with psycopg.connect(fleet.dsn(fleet.owner), autocommit=True) as o:
        o.execute("INSERT INTO schema_migrations (version, name, sha256) VALUES ('9999', '9999_future', 'x')")
    with fleet.connect(fleet.role_a) as a, pytest.raises(StoreError) as err:
        check_schema(a)
    assert f"schema is at version 9999, newer than this wgsyncd understands ({want})" in str(err.value)
    empty = store.connect(DatabaseConfig(dsn=pg_cluster.create_database()))
    with empty, pytest.raises(StoreError, match="wgsyncd db migrate"):
        check_schema(empty)


def test_concurrent_host_cycles_while_the_operator_migrates_nothing(synced: Fleet) -> None:
    errors: list[BaseException] = []

    def cycle(role: str, host: str) -> None:
        try:
            with synced.connect(role) as c:
                for i in range(5):
                    sync(c, host_state(host, counters=100 + i), synced)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=cycle, args=(synced.role_a, synced.host_a)),
        threading.Thread(target=cycle, args=(synced.role_b, synced.host_b)),
    ]
    for t in threads:
        t.start()
    with synced.connect(synced.owner) as o:
        assert store.migrate(o) == []
    for t in threads:
        t.join(60)
    assert not errors


# ---------------------------------------------------------------- drift stays small


def test_idle_cycle_with_10000_drifting_peers_adds_under_1kb(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    f = fleet
    state = host_state(f.host_a, peers=10, counters=5)
    drift = [
        Drift("wg0", f"peer{i:05d}", "peer", DriftKind.ONLY_IN, ((str(Source.WGREST), "present"),))
        for i in range(10_000)
    ]
    state.drift = drift
    with f.connect(f.role_a) as a:
        sync(a, state, f)
        first = a.execute(
            "SELECT pg_column_size(s.*), drift_count FROM sync_status s ORDER BY id DESC LIMIT 1"
        ).fetchone()
        a.rollback()
        assert first is not None and first[1] == 10_000 and first[0] > 2048  # stored once (capped)
        sizes = []
        for _ in range(3):
            sync(a, state, f)  # the same object: an idle cycle
            row = a.execute(
                "SELECT pg_column_size(s.*) FROM sync_status s ORDER BY id DESC LIMIT 1"
            ).fetchone()
            a.rollback()
            assert row is not None
            sizes.append(row[0])
        assert max(sizes) < 1024, sizes
        with capsys.disabled():
            print(f"\n10,000 drifting peers: sync_status row {first[0]} B when stored, {max(sizes)} B idle")
        last = store.status(a, f.host_a, limit=1)[0]
        assert last.drift_count == 10_000 and len(last.drift) == 1000  # the stored copy, through the hash
        assert last.drift[0]["peer"] == "peer00000"
        state2 = host_state(f.host_a, peers=10, counters=5)
        state2.drift = drift[:3]
        sync(a, state2, f)
        assert [d["peer"] for d in store.status(a, f.host_a, limit=1)[0].drift] == [
            "peer00000",
            "peer00001",
            "peer00002",
        ]
    with f.connect(f.role_a) as a2:  # a new process stores the list once, then only the hash
        sync(a2, state, f)
        sync(a2, state, f)
        rows = a2.execute("SELECT drift IS NOT NULL FROM sync_status ORDER BY id DESC LIMIT 2").fetchall()
    assert rows == [(False,), (True,)]


# ---------------------------------------------------------------- upgrade


def test_upgrade_from_every_host_on_the_owner_role_to_per_host_roles(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    """README "Upgrading from one shared role": the documented commands, in order."""
    from click.testing import CliRunner

    from wgsyncd import config
    from wgsyncd.cli import main
    from wgsyncd.store.migrate import MIGRATIONS_DIR

    dsn, _owner = pg_cluster.create_owned_database()
    old = tmp_path / "migrations-0.1"
    old.mkdir()
    for name in ("0001_initial.sql", "0002_config_versions.sql"):
        (old / name).write_text((MIGRATIONS_DIR / name).read_text())
    raw = "0123456789abcdef0123456789abcdef"  # wgsyncd 0.1: host_id = the raw machine-id
    first_seen = datetime(2026, 1, 1, tzinfo=UTC)
    with psycopg.connect(dsn) as o:  # what wgsyncd 0.1 left behind, every host as the owner
        store.migrate(o, old)
        o.execute(
            "INSERT INTO hosts VALUES (%s, 'vpn1', %s, %s, '0.1.0', NULL)", (raw, first_seen, first_seen)
        )
        o.execute(
            "INSERT INTO config_versions VALUES (%s, 1, %s, gen_random_uuid(), 'old', "
            """'{"format": 1, "interfaces": {}}', 0, 0, false, NULL)""",
            (raw, first_seen),
        )
        o.execute(
            "INSERT INTO sync_status (host_id, sync_id, started_at, finished_at, status, agent_version) "
            "VALUES (%s, gen_random_uuid(), %s, %s, 'ok', '0.1.0')",
            (raw, first_seen, first_seen),
        )
        o.commit()
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    role = f"wgs_vpn1_{uuid.uuid4().hex[:6]}"
    owner_cfg = tmp_path / "owner.toml"
    owner_cfg.write_text(f'host_id = "operator"\n[database]\ndsn = "{dsn}"\n')
    (tmp_path / "pw").write_text("vpn1-password\n")

    def cli(cfg: Path, *args: str) -> str:
        res = CliRunner().invoke(main, ["--config", str(cfg), *args])
        assert res.exit_code == 0, res.output
        return res.output

    # an upgraded agent does not migrate by itself: one line names both versions and the fix
    res = CliRunner().invoke(main, ["--config", str(owner_cfg), "sync"])
    assert res.exit_code == 1
    from wgsyncd.store.migrate import available

    assert f"schema is at version 0002, this wgsyncd needs {available()[-1].version}" in res.output
    assert "`wgsyncd db migrate`" in res.output and len(res.output.strip().splitlines()) == 1
    # 1. the operator migrates with the owner's DSN, then binds each host's OLD id to a new role
    assert "0003_roles" in cli(owner_cfg, "db", "migrate")
    assert f"host_id {raw} bound to role {role} (role created)" in cli(
        owner_cfg, "db", "add-host", raw, "--role", role, "--password-file", str(tmp_path / "pw")
    )
    assert raw in cli(owner_cfg, "db", "hosts")
    # 2. a host that did not pin its old id fails with one line naming both ids, writes nothing
    host_cfg = tmp_path / "host.toml"
    host_cfg.write_text(f'[database]\ndsn = "{pg_cluster.dsn(dbname, user=role)}"\n')
    cfg = config.load(str(host_cfg), environ={})
    assert cfg.host_id != raw and not cfg.database.auto_migrate
    with store.connect(cfg.database) as h:
        store.prepare(h, cfg.database.auto_migrate)
        with pytest.raises(StoreError) as err:
            store.write_cycle(
                h,
                host_state(cfg.host_id),
                sync_id=uuid.uuid4(),
                started_at=datetime.now(UTC),
                agent_version="t",
            )
    assert f"bound to host_id {raw}, but this sync is for host_id {cfg.host_id}" in str(err.value)
    # 3. with host_id pinned in wgsyncd.toml, its history continues under its own role
    host_cfg.write_text(f'host_id = "{raw}"\n' + host_cfg.read_text())
    cfg = config.load(str(host_cfg), environ={})
    with store.connect(cfg.database) as h:
        store.prepare(h, cfg.database.auto_migrate)
        rep = store.write_cycle(
            h,
            host_state(raw),
            sync_id=uuid.uuid4(),
            started_at=datetime.now(UTC),
            agent_version="t",
            machine_fp=cfg.machine_fp,
        )
        assert rep.config_version == 2  # after 0.1's version 1
        assert [s.agent_version for s in store.status(h, raw, limit=5)] == ["t", "0.1.0"]
    with psycopg.connect(dsn) as o:
        row = o.execute("SELECT first_seen, machine_fp FROM hosts WHERE host_id = %s", (raw,)).fetchone()
    assert row == (first_seen, cfg.machine_fp)


def test_a_host_role_is_bounded_by_server_side_timeouts_too(fleet: Fleet) -> None:
    """Through pgbouncer the agent's startup options do not arrive; the role's defaults do."""
    with psycopg.connect(fleet.dsn(fleet.role_a)) as a:
        got = {
            n: a.execute(sql.SQL("SHOW {}").format(sql.Identifier(n))).fetchone()
            for n in roles.HOST_ROLE_SETTINGS
        }
    assert got == {
        "lock_timeout": ("10s",),
        "statement_timeout": ("1min",),
        "idle_in_transaction_session_timeout": ("1min",),
    }
