"""Signed config versions in the database: signed fields of rows, blob hashes, pins, judgement.

Why a module of its own: versions.py decides *when* a version is made; this one reads
the columns the signature covers (migration 0004), so restore can walk a host's chain
without loading documents, and decides inside the writer's transaction whether the
latest row is the host's own (:func:`judge_latest`) and what the next version chains to.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from wgsyncd import signing
from wgsyncd.signing import Signed
from wgsyncd.store.db import guarded

log = logging.getLogger(__name__)

# the columns of config_versions a Signed is built from, in Signed's field order
SIGNED_COLS = (
    "host_id, version, prev_sha256, created_at, content_sha256, doc_sha256, sealed_sha256, "
    "recovery_key_fp, signing_key, signature"
)
N_SIGNED = 10


def from_row(row: tuple[Any, ...]) -> Signed:
    """A Signed from the first N_SIGNED values of a row selected with SIGNED_COLS."""
    return Signed(*row[:N_SIGNED])


def latest_link(tx: Any, host_id: str) -> str | None:
    """The link of the host's latest version as stored now (None: no version, or unsigned).

    One short indexed read per cycle even when the writer's view is current: rows in
    config_versions can be forged or deleted without touching the host row the view
    checks, and the agent must notice at its next cycle, not at its next reload.
    """
    row = tx.execute(
        f"SELECT {SIGNED_COLS} FROM config_versions WHERE host_id = %s ORDER BY version DESC LIMIT 1",
        (host_id,),
    ).fetchone()
    if row is None or row[N_SIGNED - 1] is None:
        return None
    return from_row(row).link()


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


def load_head(conn: psycopg.Connection[Any], host_id: str) -> signing.SignedHead | None:
    """The host's signed head as its hosts row holds it (migration 0009); None when it has none.

    Values are the database's and untrusted: the caller verifies the signature with a
    pinned key; a head with any field NULL is None here, like an absent one.
    """
    with guarded(conn, f"signed head of host {host_id}"):
        try:
            with conn.transaction():
                row = conn.execute(
                    # an infinite time is no datetime: psycopg would fail the read (and every restore)
                    "SELECT head_version, head_link, CASE WHEN isfinite(head_at) THEN head_at END, "
                    "head_signature FROM hosts WHERE host_id = %s",
                    (host_id,),
                ).fetchone()
        except psycopg.errors.UndefinedColumn:
            return None  # a schema before 0009: no host has signed a head there
    if row is None or None in row:
        return None
    return signing.SignedHead(host_id, *row)


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


# ---------------------------------------------------------------- the agent's judgement (in the writer's tx)


def _body_check(
    signer: signing.Signer, latest: signing.Signed, doc: dict[str, Any], verdict: signing.Verdict
) -> signing.Verdict:
    """The latest row is the host's own by its signed fields; is its document still what it signed?

    Checked whenever the document is read (it is carried forward on incomplete cycles):
    carrying an edited document forward would sign the edit.
    """
    if signing.doc_sha256(doc) == latest.doc_sha256:
        return verdict
    signer.last = signer.last or signing.LastSigned(latest.version, latest.link())
    return signing.Verdict(
        ours=False,
        prev=None,
        problem=f"tamper: the document of this host's version {latest.version} was edited in the "
        "database; writing a new signed version",
    )


def judge_latest(
    tx: Any,
    host_id: str,
    signer: signing.Signer,
    latest: signing.Signed | None,
    previous: dict[str, Any] | None,
    floor: int,
) -> tuple[str | None, dict[str, Any] | None, bool, int]:
    """(link to chain to, document to carry forward, force a new version, version floor).

    The latest row is trusted only when it is the version this host signed last
    (signing.judge). Otherwise nothing is carried forward from it, a new version is
    forced, and its number is above both the row and the host's own last version.
    After tampering the chain continues from the host's own last version when that
    row is still intact, else a new segment starts (GENESIS); either way the tamper
    line goes to the journal here and to sync_status through ``signer.problem``.
    """
    verdict = signing.judge(signer.key, signer.last, latest)
    if not verdict.ours:  # another process on this host (a manual `wgsyncd sync`) may have signed since
        disk = signing.read_record(signer.state_dir, signer.host_id)
        if disk is not None and disk != signer.last:
            signer.last = disk
            verdict = signing.judge(signer.key, signer.last, latest)
    if verdict.ours and latest is not None and previous is not None:
        verdict = _body_check(signer, latest, previous, verdict)
    if verdict.ours:
        if latest is not None and (signer.last is None or signer.last.link != verdict.prev):
            signer.pending = signing.LastSigned(latest.version, latest.link())  # a lost record write
        return verdict.prev, previous, False, floor
    last = signer.last
    floor = max(floor, last.version if last else 0)
    if verdict.problem is None:
        if verdict.note:
            log.warning("host %s: starting a new signed chain: %s", host_id, verdict.note)
        return signing.GENESIS, None, True, floor
    signer.problem = verdict.problem
    log.error("host %s: %s", host_id, verdict.problem)
    assert last is not None  # judge reports a problem only against a record
    own = own_version(tx, host_id, last.version)
    if own is not None and own[0].link() == last.link and own[0].signed_by(signer.key.verify_key):
        doc_ok = own[0].doc_sha256 == signing.doc_sha256(own[1])
        return last.link, own[1] if doc_ok else None, True, floor
    log.error(
        "host %s: its own last version %d is gone or altered: the chain starts a new segment",
        host_id,
        last.version,
    )
    return signing.GENESIS, None, True, floor
