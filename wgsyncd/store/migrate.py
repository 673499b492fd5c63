"""Schema migrations: numbered SQL files applied once each, in order, under a lock.

Only the schema owner migrates (``wgsyncd db migrate`` with the owner's DSN); host
roles cannot (no DDL, no lock on the ledger) and by default never try: a host whose
schema is older or newer than it understands stops with one line saying so
(``check_schema``). Two migrators at once queue on ``LOCK TABLE schema_migrations
IN EXCLUSIVE MODE`` inside each migration's transaction: no session advisory lock
(pgbouncer in transaction mode, and any role may take any advisory key), and a
host role, which can at most SELECT the ledger, cannot take that lock.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from wgsyncd.store.db import StoreError, describe_connection, guarded, waited_in

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    name        text NOT NULL,
    sha256      text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    """One SQL file: ``0001_initial.sql`` -> version "0001", name "0001_initial"."""

    version: str
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        """Recorded when applied, so an edited, already-applied file is caught."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in version order; a badly named .sql file is an error, not skipped."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise StoreError(f"{path}: migration file name must look like 0001_name.sql")
        found.append(Migration(version=m.group(1), name=path.stem, sql=path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise StoreError(f"{directory}: two migration files share a version number")
    return found


_LOST_RACE = (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateObject, psycopg.errors.DuplicateTable)


def _ledger(conn: psycopg.Connection[Any]) -> None:
    """Create schema_migrations once; two first migrators racing on CREATE TABLE retry once."""
    for attempt in (1, 2):
        try:
            with conn.transaction():
                conn.execute(_CREATE_LEDGER)
            return
        # the other one created it meanwhile: PostgreSQL reports the lost race on its row
        # type as a unique violation or as "type already exists", depending on timing
        except _LOST_RACE:
            if attempt == 2:
                raise


def _applied(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """version -> sha256 of the applied migrations (read under the caller's lock)."""
    rows = conn.execute("SELECT version, sha256 FROM schema_migrations").fetchall()
    return {r[0]: r[1] for r in rows}


def migrate(conn: psycopg.Connection[Any], directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the pending migrations, each in its own transaction; return their names.

    Idempotent: a second call returns []. A migration already applied whose file
    changed since is refused (the schema would no longer match the code). Each
    transaction first locks the ledger, then re-reads it: a concurrent migrator
    waits (bounded by lock_timeout) and then finds the migration done.
    """
    todo = available(directory)
    applied: list[str] = []
    with guarded(conn, "migrate"):
        _ledger(conn)
        for mig in todo:
            with conn.transaction():
                try:
                    conn.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
                except psycopg.errors.LockNotAvailable as exc:
                    waited_in(exc, "LOCK TABLE schema_migrations")
                    raise
                done = _applied(conn)
                if mig.version in done:
                    if done[mig.version] != mig.sha256:
                        raise StoreError(
                            f"{describe_connection(conn)}: migrate: {mig.name}.sql changed after it "
                            "was applied; add a new migration instead"
                        )
                    continue
                conn.execute(mig.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
                    (mig.version, mig.name, mig.sha256),
                )
            applied.append(mig.name)
    return applied


def check_schema(conn: psycopg.Connection[Any], directory: Path = MIGRATIONS_DIR) -> str:
    """The schema version, when it is exactly the one this wgsyncd understands; else StoreError.

    A host never migrates by default (its role cannot): older means the operator has
    not run ``wgsyncd db migrate`` yet, newer means this host runs an older wgsyncd.
    """
    want = available(directory)[-1].version
    with guarded(conn, "schema check"), conn.transaction():
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        row = (
            conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
            if exists and exists[0]
            else None
        )
    have = row[0] if row and row[0] else None
    target = describe_connection(conn)
    if have is None:
        raise StoreError(
            f"{target}: schema not created (this wgsyncd needs schema {want}); the operator runs "
            "`wgsyncd db migrate` with the schema owner's DSN"
        )
    if have < want:
        raise StoreError(
            f"{target}: schema is at version {have}, this wgsyncd needs {want}; the operator runs "
            "`wgsyncd db migrate` with the schema owner's DSN"
        )
    if have > want:
        raise StoreError(
            f"{target}: schema is at version {have}, newer than this wgsyncd understands ({want}); "
            "upgrade wgsyncd on this host"
        )
    return have


def prepare(conn: psycopg.Connection[Any], auto_migrate: bool) -> None:
    """Before a host's first cycle: migrate (only if configured; owner DSN) or check the schema."""
    if auto_migrate:
        migrate(conn)
    else:
        check_schema(conn)
