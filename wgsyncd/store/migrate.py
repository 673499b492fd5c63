"""Schema migrations: numbered SQL files applied once each, in order, under a lock.

Many hosts start at once after an upgrade; the session advisory lock makes the
second one wait and then find nothing left to do, instead of racing on CREATE TABLE.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from wgsyncd.store.db import StoreError, advisory_key, describe_connection, guarded

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = advisory_key("migrate", "schema")

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


def migrate(conn: psycopg.Connection[Any], directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the pending migrations, each in its own transaction; return their names.

    Idempotent: a second call returns []. A migration already applied whose file
    changed since is refused (the schema would no longer match the code).
    """
    todo = available(directory)
    applied: list[str] = []
    with guarded(conn, "migrate"):
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        conn.commit()
        try:
            with conn.transaction():
                conn.execute(_CREATE_LEDGER)
                rows = conn.execute("SELECT version, sha256 FROM schema_migrations").fetchall()
            done = {r[0]: r[1] for r in rows}
            for mig in todo:
                if mig.version in done:
                    if done[mig.version] != mig.sha256:
                        raise StoreError(
                            f"{describe_connection(conn)}: migrate: {mig.name}.sql changed after it "
                            "was applied; add a new migration instead"
                        )
                    continue
                with conn.transaction():
                    conn.execute(mig.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
                        (mig.version, mig.name, mig.sha256),
                    )
                applied.append(mig.name)
        finally:
            if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                conn.rollback()
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
                conn.commit()
    return applied
