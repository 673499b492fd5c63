"""The operator's side of per-host roles: add-host, operator and reader, schema versions,
drift size, and the upgrade from one shared owner role (tests/beds/roles.py: the fleet).
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.beds.postgres import PgCluster
from tests.beds.roles import Fleet, hold_own_row, host_state, sync
from wgsyncd import store
from wgsyncd.config import DatabaseConfig
from wgsyncd.state import Drift, DriftKind, Source
from wgsyncd.store import roles, versions
from wgsyncd.store.db import StoreError
from wgsyncd.store.migrate import check_schema

pytestmark = pytest.mark.postgres


def test_add_host_pins_in_the_trust_file_and_says_what_it_holds(fleet: Fleet, tmp_path: Path) -> None:
    """`db add-host --signing-key K --trusted-keys FILE`: pinned, already pinned, and a key the
    operator retired stays retired (and is named so); a file it cannot write is one line."""
    from click.testing import CliRunner

    from wgsyncd import signing
    from wgsyncd.cli import main
    from wgsyncd.restore import trust

    f = fleet
    cfg = tmp_path / "owner.toml"
    cfg.write_text(f'[database]\ndsn = "{f.dsn(f.owner)}"\n')
    key = signing.load_or_create(str(tmp_path / "host-c-state")).verify_key
    path = str(tmp_path / "trusted")
    args = ["--config", str(cfg), "db", "add-host", "host-c", "--role", f"wgs_c_{uuid.uuid4().hex[:8]}"]
    args += ["--signing-key", key, "--trusted-keys", path]

    def run(*extra: str) -> str:
        res = CliRunner().invoke(main, [*args, *extra])
        assert res.exit_code == 0, res.output
        return res.output

    assert f"host host-c: signing key {key} pinned in {path}" in run()
    assert f"host host-c: signing key {key} already pinned in {path}\n" in run()
    trust.retire_pin(path, "host-c", key, 3)
    assert f"already pinned in {path}, retired after version 3" in run()
    assert trust.read_pins(path).retired_after("host-c", key) == 3  # not undone
    res = CliRunner().invoke(main, [*args[:-1], str(tmp_path / "missing-dir" / "trusted")])
    assert res.exit_code == 1 and "cannot write" in res.output and "Traceback" not in res.output


def test_add_host_is_idempotent_and_refuses_rebinding(fleet: Fleet) -> None:
    f = fleet
    with f.connect(f.owner) as o:
        assert "bound to role" in roles.add_host(o, f.host_a, f.role_a)
        assert "(role created)" not in roles.add_host(o, f.host_a, f.role_a)
        with pytest.raises(StoreError, match=f"host_id {f.host_a} is already bound to role {f.role_a}"):
            roles.add_host(o, f.host_a, f.role_b)
        with pytest.raises(StoreError, match=f"role {f.role_a} is already bound to host_id {f.host_a}"):
            roles.add_host(o, "host-c", f.role_a)
        with pytest.raises(
            StoreError, match=f"role {f.owner} has CREATEROLE; a host needs a role of its own"
        ):
            roles.add_host(o, "host-c", f.owner)
        with pytest.raises(StoreError, match="role postgres has SUPERUSER, CREATEROLE"):
            roles.add_host(o, "host-c", "postgres")
        with pytest.raises(StoreError, match="role: must be"):
            roles.add_host(o, "host-c", "x" * 64)
        listed = {h.host_id: h.role_name for h in roles.hosts(o)}
        assert listed[f.host_a] == f.role_a and listed[f.host_b] == f.role_b
        assert "unbound" in roles.remove_host(o, f.host_b)
    with pytest.raises(StoreError, match="not permitted to log in"), f.connect(f.role_b) as b:
        sync(b, host_state(f.host_b), f)


@pytest.mark.parametrize("attr", ["CREATEROLE", "CREATEDB", "REPLICATION", "BYPASSRLS", "SUPERUSER"])
def test_add_host_refuses_a_role_with_a_privileged_attribute(fleet: Fleet, attr: str) -> None:
    # the review's attack: a CREATEROLE host role ran GRANT "<owner>" TO itself and read
    # every host's sealed blobs; such a role is never bound nor put in wgsyncd_host
    f = fleet
    evil = f"wgs_evil_{attr.lower()}_{f.role_a[-8:]}"
    f.cluster.admin(f'CREATE ROLE "{evil}" LOGIN {attr}')
    with f.connect(f.owner) as o:
        with pytest.raises(StoreError, match=f"add-host: role {evil} has {attr}; a host needs") as exc:
            roles.add_host(o, "host-evil", evil)
        assert "\n" not in str(exc.value)
        with o.transaction():
            assert o.execute("SELECT 1 FROM host_roles WHERE host_id = 'host-evil'").fetchone() is None
            assert o.execute("SELECT pg_has_role(%s, 'wgsyncd_host', 'MEMBER')", (evil,)).fetchone() == (
                attr == "SUPERUSER",
            )


def test_add_host_refuses_a_role_that_is_a_member_of_another_group(fleet: Fleet) -> None:
    f = fleet
    for group in (roles.OPERATOR_GROUP, roles.READER_GROUP, f.role_b, f.owner):
        evil = f"wgs_m_{uuid.uuid4().hex[:10]}"
        f.cluster.admin(f'CREATE ROLE "{evil}" LOGIN')
        f.cluster.admin(f'GRANT "{group}" TO "{evil}"')
        with (
            f.connect(f.owner) as o,
            pytest.raises(StoreError, match=f"role {evil} (is a member of {group}|has the schema owner)"),
        ):
            roles.add_host(o, "host-evil", evil)


def test_add_host_creates_a_plain_role_and_a_role_changed_later_cannot_write(fleet: Fleet) -> None:
    f = fleet
    with psycopg.connect(f.dsn(f.owner), autocommit=True) as o:
        row = o.execute(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
            "FROM pg_roles WHERE rolname = %s",
            (f.role_a,),
        ).fetchone()
    assert row == (True, False, False, False, False, False)
    with f.connect(f.role_a) as a:
        sync(a, host_state(f.host_a), f)
    # a DBA widens the bound role afterwards: the writer functions refuse it
    for grant, undo in (
        (f'ALTER ROLE "{f.role_a}" CREATEDB', f'ALTER ROLE "{f.role_a}" NOCREATEDB'),
        (f'GRANT wgsyncd_reader TO "{f.role_a}"', f'REVOKE wgsyncd_reader FROM "{f.role_a}"'),
    ):
        f.cluster.admin(grant)
        with f.connect(f.role_a) as a, pytest.raises(StoreError, match="privileged attribute"):
            sync(a, host_state(f.host_a), f)
        f.cluster.admin(undo)
    with f.connect(f.role_a) as a:
        sync(a, host_state(f.host_a), f)


def _unbound(f: Fleet) -> None:
    """Host A's binding is gone, its role is NOLOGIN and out of wgsyncd_host."""
    with psycopg.connect(f.dsn(f.owner), autocommit=True) as o:
        assert o.execute("SELECT 1 FROM host_roles WHERE host_id = %s", (f.host_a,)).fetchone() is None
        assert o.execute(
            "SELECT rolcanlogin, pg_has_role(rolname, 'wgsyncd_host', 'MEMBER') FROM pg_roles "
            "WHERE rolname = %s",
            (f.role_a,),
        ).fetchone() == (False, False)
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        psycopg.connect(f.dsn(f.role_a))


def test_remove_host_is_not_blocked_by_the_host_holding_its_row_and_ends_its_sessions(synced: Fleet) -> None:
    f = synced
    a = hold_own_row(f)
    f.cluster.admin(f'GRANT pg_signal_backend TO "{f.owner}"')
    with f.connect(f.owner, statement_timeout=20.0) as o:
        out = roles.remove_host(o, f.host_a)
    assert out.splitlines() == [
        f"host_id {f.host_a} unbound from role {f.role_a} (role is now NOLOGIN)",
        f"ended 1 open session(s) of role {f.role_a}",
        f"machine fingerprint of host_id {f.host_a} cleared",
    ]
    _unbound(f)
    with pytest.raises(psycopg.OperationalError):
        a.execute("SELECT 1")  # its session is gone, and its transaction with it
    with psycopg.connect(f.dsn(f.owner), autocommit=True) as o:
        assert o.execute("SELECT machine_fp FROM hosts WHERE host_id = %s", (f.host_a,)).fetchone() == (None,)
        roles.add_host(o, f.host_a, f.role_a)  # the operator binds it again: LOGIN again
    with f.connect(f.role_a) as again:
        sync(again, host_state(f.host_a), f, machine_fp="new-machine")


def test_remove_host_without_the_right_to_signal_unbinds_and_reports_the_rest(synced: Fleet) -> None:
    f = synced
    a = hold_own_row(f)
    try:
        with f.connect(f.owner, statement_timeout=20.0) as o:
            out = roles.remove_host(o, f.host_a, lock_wait="200ms").splitlines()
        assert out[0] == f"host_id {f.host_a} unbound from role {f.role_a} (role is now NOLOGIN)"
        assert out[1].startswith(f"could not end 1 open session(s) of role {f.role_a}: this role lacks")
        assert out[2].startswith(f"machine fingerprint of host_id {f.host_a} NOT cleared: its hosts row")
        _unbound(f)
        # the still-open session reads and writes nothing any more
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            a.execute("SELECT count(*) FROM peers")
    finally:
        a.close()
    with f.connect(f.owner) as o:  # once the session is gone, running it again finishes the job
        assert roles.remove_host(o, f.host_a).splitlines()[-1].endswith("cleared")


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
        [
            "restore",
            "--host",
            f.host_a,
            "--recovery-key",
            f.recovery_file,
            "--trusted-keys",
            f.trusted_keys,
            "--to-dir",
            str(tmp_path / "r"),
        ],
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
        loaded = restore.load(op, f.host_a, recovery_key_file=f.recovery_file, trusted_keys=f.trusted_keys)
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
