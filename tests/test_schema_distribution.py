"""The schema stays distributable by host_id (issue 14 item 3).

A sharded PostgreSQL (Citus: every table distributed on host_id, colocated) can only
enforce a primary key, unique constraint or index, exclusion constraint or foreign
key inside one shard, so each must include host_id, and a foreign key must map
host_id to host_id. This walks the catalog of a freshly migrated database (every
migration, present and future) and names each key that breaks that, and each table
without a host_id column. The README's "Running on Citus" section lists the
create_distributed_table calls this keeps valid.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.postgres

# Tables deliberately outside the host_id scheme, each with why. On Citus they stay
# local to the coordinator or become reference tables (README, "Running on Citus").
ALLOWED_GLOBAL = {
    # bookkeeping of `wgsyncd db migrate`: written by the owner only, read by nobody else
    "schema_migrations",
    # role -> host_id bindings (migration 0003): written by the owner only, a handful of
    # rows, read through wgsyncd_bound_host() on every statement: a reference table on Citus
    "host_roles",
    # per-host quotas (migration 0008): owner-written, a row per host with its own quota and
    # the default row '*' every host's write trigger reads beside its own: a reference table
    "host_quotas",
}

# every key-like constraint and unique index of the current schema's tables, with its columns
_KEYS = """
SELECT c.relname, con.conname, con.contype::text,
       array(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
       CASE WHEN con.contype = 'f' THEN con.confrelid::regclass::text END,
       array(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i)
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND con.contype IN ('p', 'u', 'f', 'x')
UNION ALL
SELECT c.relname, i.relname, 'index',
       array(SELECT a.attname::text FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.n ORDER BY k.o),
       NULL, NULL
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class c ON c.oid = x.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND x.indisunique
"""

_TABLES = """
SELECT c.relname, EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                          AND a.attname = 'host_id' AND NOT a.attisdropped)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition
"""

_KIND = {"p": "primary key", "u": "unique constraint", "f": "foreign key", "x": "exclusion constraint"}


def violations(conn: psycopg.Connection[Any], allowed: set[str] = ALLOWED_GLOBAL) -> list[str]:
    """One line per table or key that would stop the schema being distributed by host_id."""
    out = []
    for table, has_host_id in conn.execute(_TABLES).fetchall():
        if table not in allowed and not has_host_id:
            out.append(f"table {table}: no host_id column")
    for table, name, kind, cols, ref_table, ref_cols in conn.execute(_KEYS).fetchall():
        if table in allowed:
            continue
        what = f"{table}: {_KIND.get(kind, 'unique index')} {name} ({', '.join(cols)})"
        if "host_id" not in cols:
            out.append(f"{what} does not include host_id")
        elif kind == "f" and (ref_table in allowed or ref_cols[cols.index("host_id")] != "host_id"):
            out.append(f"{what} -> {ref_table} ({', '.join(ref_cols)}) does not map host_id to host_id")
    return sorted(out)


def test_every_key_of_the_migrated_schema_includes_host_id(pg_conn: psycopg.Connection[Any]) -> None:
    tables = {r[0] for r in pg_conn.execute(_TABLES).fetchall()}
    assert {"hosts", "peers", "sync_status", "config_versions"} <= tables  # the walk sees the schema
    keys = pg_conn.execute(_KEYS).fetchall()
    assert {k[2] for k in keys} >= {"p", "f", "index"}  # and its keys, foreign and unique ones too
    assert violations(pg_conn) == []


def test_readme_distributes_every_host_table_parents_first(pg_conn: psycopg.Connection[Any]) -> None:
    """The README's Citus recipe names every table with host_id (a new table needs its
    line), colocated with hosts, each parent before the tables whose foreign keys point at it."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    calls = re.findall(r"SELECT create_distributed_table\('(\w+)', 'host_id'(.*)\);", readme)
    order = [table for table, _rest in calls]
    assert order[0] == "hosts" and all("colocate_with => 'hosts'" in rest for _t, rest in calls[1:])
    host_tables = {t for t, has in pg_conn.execute(_TABLES).fetchall() if has and t not in ALLOWED_GLOBAL}
    assert sorted(order) == sorted(host_tables)
    for table, _name, kind, _cols, ref_table, _ref_cols in pg_conn.execute(_KEYS).fetchall():
        if kind == "f" and ref_table != table:
            assert order.index(ref_table) < order.index(table), f"{ref_table} before {table}"


def test_the_walk_names_each_kind_of_violation(pg_conn: psycopg.Connection[Any]) -> None:
    """A key the walk would miss makes the test above worthless: each kind is caught."""
    pg_conn.execute(
        """
        CREATE TABLE bad_global (id int PRIMARY KEY, label text UNIQUE);
        CREATE TABLE bad_keys (host_id text NOT NULL, other text NOT NULL, peer text NOT NULL,
                               PRIMARY KEY (host_id, peer),
                               FOREIGN KEY (other, peer) REFERENCES bad_keys (host_id, peer),
                               FOREIGN KEY (host_id) REFERENCES schema_migrations (version));
        CREATE UNIQUE INDEX bad_keys_peer ON bad_keys (peer);
        """
    )
    assert violations(pg_conn) == [
        "bad_global: primary key bad_global_pkey (id) does not include host_id",
        "bad_global: unique constraint bad_global_label_key (label) does not include host_id",
        "bad_global: unique index bad_global_label_key (label) does not include host_id",
        "bad_global: unique index bad_global_pkey (id) does not include host_id",
        "bad_keys: foreign key bad_keys_host_id_fkey (host_id) -> schema_migrations (version) "
        "does not map host_id to host_id",
        "bad_keys: foreign key bad_keys_other_peer_fkey (other, peer) does not include host_id",
        "bad_keys: unique index bad_keys_peer (peer) does not include host_id",
        "table bad_global: no host_id column",
    ]
    pg_conn.rollback()
