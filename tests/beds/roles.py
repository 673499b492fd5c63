"""Test bed: one owned database with two bound host roles, an operator and a reader.

The database is owned by a non-superuser role (row-level security applies to it, as
in a real deployment); host A and host B each get a LOGIN role bound to their
host_id (``wgsyncd db add-host``), plus an operator and a reader. Fixtures:
``fleet`` (bound, nothing synced) and ``synced`` (A and B synced twice each).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.beds.postgres import PgCluster, synthetic_state
from wgsyncd import secrets, signing, store
from wgsyncd.config import DatabaseConfig
from wgsyncd.restore import trust
from wgsyncd.state import HostState
from wgsyncd.store import roles, signed


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
    state_root: str  # <state_root>/signing-<host_id>: each host's state dir (signing key)
    trusted_keys: str  # the operator's trust file, both hosts pinned

    def state_dir(self, host_id: str) -> str:
        """The state dir of ``host_id``'s agent: where its signing key lives."""
        return f"{self.state_root}/signing-{host_id}"

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
        str(tmp_path),
        str(tmp_path / "trusted-keys"),
    )
    with f.connect(owner) as conn:
        store.migrate(conn)
        assert "bound to role" in roles.add_host(conn, f.host_a, f.role_a)
        roles.add_host(conn, f.host_b, f.role_b)
        for host_id in (f.host_a, f.host_b):  # `db add-host ... --signing-key KEY --trusted-keys FILE`
            key = signing.load_or_create(f.state_dir(host_id)).verify_key
            assert signed.pin_signing_key(conn, host_id, key)
            trust.add_pin(f.trusted_keys, host_id, key)
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
        **{"signer": signing.signer_for(fleet.state_dir(state.host_id), state.host_id), **kw},
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
    """Host A and host B each synced twice through their own roles (rows in every table),
    each with a quota of its own (migration 0008), as an operator sets one."""
    from wgsyncd.store import quota

    with psycopg.connect(fleet.dsn(fleet.owner), autocommit=True) as owner:
        for host in (fleet.host_a, fleet.host_b):
            quota.set_quota(owner, host, {"max_peers": 1000})
    for host, role in ((fleet.host_a, fleet.role_a), (fleet.host_b, fleet.role_b)):
        with fleet.connect(role) as conn:
            sync(conn, host_state(host), fleet)
            sync(conn, host_state(host, counters=5000), fleet)
            with conn.transaction():
                assert conn.execute("SELECT wgsyncd_bound_host()").fetchone() == (host,)
    return fleet


def hold_own_row(f: Fleet) -> psycopg.Connection[Any]:
    """Host A, compromised: lifts its own idle and statement timeouts (any role may) and keeps
    a writing transaction open, holding its hosts row lock and every host's vacuum back."""
    a = psycopg.connect(f.dsn(f.role_a), autocommit=True)
    a.execute("SET idle_in_transaction_session_timeout = 0")
    a.execute("SET statement_timeout = 0")
    a.execute("BEGIN")
    a.execute("SELECT * FROM wgsyncd_begin_cycle(%s, 'h', 'v', gen_random_uuid(), 'fp-a')", (f.host_a,))
    return a
