"""SQL for signed config versions: the signed fields of rows, blob hashes, database pins.

Why a module of its own: versions.py decides *when* a version is made; this one only
reads the columns the signature covers (migration 0004) so the writer can judge the
latest row and restore can walk a host's chain without loading documents.
"""

from __future__ import annotations

from typing import Any

import psycopg

from wgsyncd.signing import Signed
from wgsyncd.store.db import guarded

# the columns of config_versions a Signed is built from, in Signed's field order
SIGNED_COLS = (
    "host_id, version, prev_sha256, created_at, content_sha256, doc_sha256, sealed_sha256, "
    "recovery_key_fp, signing_key, signature"
)
N_SIGNED = 10


def from_row(row: tuple[Any, ...]) -> Signed:
    """A Signed from the first N_SIGNED values of a row selected with SIGNED_COLS."""
    return Signed(*row[:N_SIGNED])


def own_version(tx: Any, host_id: str, version: int) -> tuple[Signed, dict[str, Any]] | None:
    """One version's signed fields and document (the agent's own last version), or None."""
    row = tx.execute(
        f"SELECT {SIGNED_COLS}, doc FROM config_versions WHERE host_id = %s AND version = %s",
        (host_id, version),
    ).fetchone()
    return (from_row(row), row[N_SIGNED]) if row is not None else None


def blob_hashes(tx: Any, host_id: str, doc: dict[str, Any]) -> dict[str, str]:
    """interface -> sha256 of the sealed blob the version's document points at (as stored).

    Read back after the insert: a blob already stored (ON CONFLICT DO NOTHING) keeps its
    old bytes, and those are what restore will open.
    """
    refs = {
        name: iface["secrets"]
        for name, iface in doc["interfaces"].items()
        if (iface.get("secrets") or {}).get("sealed_to")
    }
    if not refs:
        return {}
    names = sorted(refs)
    rows = tx.execute(
        "SELECT s.interface, encode(sha256(s.sealed), 'hex') FROM config_secrets s "
        "JOIN unnest(%s::text[], %s::text[], %s::text[]) AS r(interface, sha, fp) "
        "ON s.interface = r.interface AND s.secrets_sha256 = r.sha AND s.recovery_key_fp = r.fp "
        "WHERE s.host_id = %s",
        (names, [refs[n]["sha256"] for n in names], [refs[n]["sealed_to"] for n in names], host_id),
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def load_chain(conn: psycopg.Connection[Any], host_id: str) -> list[Signed]:
    """Every version's signed fields (no documents), oldest first: what restore verifies."""
    with guarded(conn, f"signatures of host {host_id}"), conn.transaction():
        rows = conn.execute(
            f"SELECT {SIGNED_COLS} FROM config_versions WHERE host_id = %s ORDER BY version", (host_id,)
        ).fetchall()
    return [from_row(r) for r in rows]


def pin_signing_key(
    conn: psycopg.Connection[Any], host_id: str, verify_key: str, comment: str | None = None
) -> bool:
    """Record the operator's pin of a host's verify key in the database; False if it was there.

    For `wgsyncd db add-host HOST --signing-key KEY` (run by the database owner). Restore
    never trusts these rows, it only cross-checks them with the operator's trust file.
    """
    from wgsyncd.signing import parse_verify_key

    key = parse_verify_key(verify_key, f"host {host_id}: signing key")
    with guarded(conn, f"pin signing key of host {host_id}"), conn.transaction():
        cur = conn.execute(
            "INSERT INTO host_signing_keys (host_id, verify_key, comment) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (host_id, key, comment),
        )
        return cur.rowcount == 1


def pinned_keys(conn: psycopg.Connection[Any], host_id: str) -> list[str] | None:
    """The database's pins for ``host_id``; None when the table cannot be read (older schema, no grant)."""
    try:
        with conn.transaction():
            rows = conn.execute(
                "SELECT verify_key FROM host_signing_keys WHERE host_id = %s ORDER BY pinned_at", (host_id,)
            ).fetchall()
    except psycopg.Error:
        return None
    return [r[0] for r in rows]
