"""The operator's role commands: one LOGIN role per host, bound to its host_id; operators; readers.

Run with the schema owner's DSN (a role with CREATEROLE, or a superuser): the groups,
the binding table and the row-level security come from migration 0003; this module
only creates login roles, grants group membership and writes ``host_roles``.

Role names and host ids reach SQL only as ``psycopg.sql.Identifier`` or parameters.
A password never reaches the server in clear, a log line or an error message: the
server gets a SCRAM-SHA-256 verifier computed here (RFC 5802/7677, the form
PostgreSQL stores), and a failed ALTER ROLE is reported without its statement.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from wgsyncd.store.db import StoreError, describe_connection, guarded

HOST_GROUP = "wgsyncd_host"
OPERATOR_GROUP = "wgsyncd_operator"
READER_GROUP = "wgsyncd_reader"
SCRAM_ITERATIONS = 4096  # PostgreSQL's default scram_iterations
# server-side defaults of a host role: its sessions are bounded even where the agent's
# own startup options do not arrive (pgbouncer drops `options`); the agent sets lower ones
HOST_ROLE_SETTINGS = {
    "lock_timeout": "10s",
    "statement_timeout": "60s",
    "idle_in_transaction_session_timeout": "60s",
}


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """``SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>``: what the server keeps, not the password.

    Sent as the role's PASSWORD, the server stores it as is (it recognises the format),
    so the clear password never crosses the wire nor lands in the server's logs.
    """
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}$"
        f"{b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


@dataclass
class HostBinding:
    """One row of ``wgsyncd db hosts``."""

    host_id: str
    role_name: str | None
    bound_at: datetime | None
    machine_fp: str | None
    last_seen: datetime | None
    last_status: str | None


# role attributes a host role must not have: each is a way out of its own rows (CREATEROLE
# grants itself the owner's role on PostgreSQL <= 15, BYPASSRLS reads every host, ...)
_HOST_FORBIDDEN_ATTRS = {
    "rolsuper": "SUPERUSER",
    "rolcreaterole": "CREATEROLE",
    "rolcreatedb": "CREATEDB",
    "rolreplication": "REPLICATION",
    "rolbypassrls": "BYPASSRLS",
}
# what CREATE ROLE says explicitly, whatever the server's or a template's defaults
_PLAIN_ROLE = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


def _role_exists(conn: psycopg.Connection[Any], role: str) -> bool:
    """Whether a role of that name exists in the cluster (roles are cluster-wide)."""
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def _ensure_login_role(conn: psycopg.Connection[Any], role: str, group: str, password: str | None) -> bool:
    """Create ``role`` (LOGIN, member of ``group``) when missing, else add it to the group.

    Returns whether it was created. The password, if any, is set as a SCRAM verifier.
    """
    created = False
    if not _role_exists(conn, role):
        conn.execute(sql.SQL("CREATE ROLE {} " + _PLAIN_ROLE).format(sql.Identifier(role)))
        created = True
    elif not conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (role,)).fetchone()[0]:
        conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(role)))  # remove-host's NOLOGIN
    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(role)))
    if password is not None:
        try:
            with conn.transaction():  # a savepoint: the error below must not carry the statement
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(scram_verifier(password))
                    )
                )
        except psycopg.Error as exc:
            raise StoreError(
                f"{describe_connection(conn)}: setting the password of role {role} failed: "
                f"{type(exc).__name__}"
            ) from None
    return created


def _check_host_role(conn: psycopg.Connection[Any], role: str) -> None:
    """Refuse an existing role that could reach beyond its own rows: one with a forbidden
    attribute, the schema owner's rights, or membership in any role but wgsyncd_host (an
    operator or reader group, another host's role, the owner). Nothing to check when the
    role does not exist yet (add-host creates it plain)."""
    cols = ", ".join(_HOST_FORBIDDEN_ATTRS)
    row = conn.execute(
        f"SELECT {cols}, pg_has_role(rolname, current_user, 'MEMBER'), "
        "ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
        "      WHERE m.member = r.oid AND g.rolname <> %s ORDER BY 1) "
        "FROM pg_roles r WHERE rolname = %s",
        (HOST_GROUP, role),
    ).fetchone()
    if row is None:
        return
    where = f"{describe_connection(conn)}: add-host: role {role}"
    attrs = [name for name, on in zip(_HOST_FORBIDDEN_ATTRS.values(), row, strict=False) if on]
    if attrs:
        raise StoreError(
            f"{where} has {', '.join(attrs)}; a host needs a role of its own without it "
            f"(ALTER ROLE ... NO{attrs[0]}, or let add-host create a new role)"
        )
    if row[-2]:
        raise StoreError(f"{where} has the schema owner's rights; a host needs a role of its own")
    if row[-1]:
        raise StoreError(
            f"{where} is a member of {', '.join(row[-1])}; a host role may be a member of {HOST_GROUP} only"
        )


def add_host(conn: psycopg.Connection[Any], host_id: str, role: str, password: str | None = None) -> str:
    """Bind LOGIN role ``role`` (created if missing, in wgsyncd_host) to ``host_id``.

    Re-running with the same pair changes nothing (but sets the password if given).
    A host_id bound to another role, or a role bound to another host_id, is refused:
    ``remove-host`` first. Returns a one-line summary.
    """
    check_name("host_id", host_id)
    check_name("role", role)
    with guarded(conn, f"add-host {host_id}"), conn.transaction():
        _check_host_role(conn, role)
        conn.execute("LOCK TABLE host_roles IN SHARE ROW EXCLUSIVE MODE")  # two operators at once
        for key, value, other in (("host_id", host_id, "role_name"), ("role_name", role, "host_id")):
            row = conn.execute(
                sql.SQL("SELECT {} FROM host_roles WHERE {} = %s").format(
                    sql.Identifier(other), sql.Identifier(key)
                ),
                (value,),
            ).fetchone()
            if row is not None and row[0] != (role if key == "host_id" else host_id):
                what = f"host_id {host_id} is already bound to role {row[0]}"
                if key == "role_name":
                    what = f"role {role} is already bound to host_id {row[0]}"
                raise StoreError(
                    f"{describe_connection(conn)}: add-host: {what}; run wgsyncd db remove-host first"
                )
        created = _ensure_login_role(conn, role, HOST_GROUP, password)
        for name, value in HOST_ROLE_SETTINGS.items():
            conn.execute(
                sql.SQL("ALTER ROLE {} SET {} = {}").format(
                    sql.Identifier(role), sql.Identifier(name), sql.Literal(value)
                )
            )
        conn.execute(
            "INSERT INTO host_roles (role_name, host_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (role, host_id),
        )
    return f"host_id {host_id} bound to role {role}" + (" (role created)" if created else "")


# how long remove-host waits for the host's hosts row (after ending its sessions)
REMOVE_LOCK_WAIT = "5s"


def remove_host(conn: psycopg.Connection[Any], host_id: str, lock_wait: str = REMOVE_LOCK_WAIT) -> str:
    """Unbind ``host_id`` so that the host itself cannot stop it, in three steps.

    1. One committed transaction: the binding goes, its role leaves wgsyncd_host and
       becomes NOLOGIN (nothing here waits on a lock the host can hold: host_roles is
       the owner's alone). From now on the role reads and writes nothing.
    2. Its open sessions are ended (pg_terminate_backend); one that holds its hosts
       row lock in an open transaction (it may lift its own idle timeout) would block
       step 3. Without the right to signal them this is said, not fatal.
    3. The machine fingerprint is cleared (the next machine to sync as host_id is
       accepted) with a bounded lock wait; a timeout is reported, not fatal.

    The host's data and the login role itself stay (history). Returns the lines to show.
    """
    with guarded(conn, f"remove-host {host_id}"):
        with conn.transaction():
            row = conn.execute(
                "DELETE FROM host_roles WHERE host_id = %s RETURNING role_name", (host_id,)
            ).fetchone()
            if row is not None:
                ident = sql.Identifier(row[0])
                conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(HOST_GROUP), ident))
                conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(ident))
        out = [f"host_id {host_id} was not bound to a role"]
        if row is not None:
            out = [f"host_id {host_id} unbound from role {row[0]} (role is now NOLOGIN)"]
            out.append(_end_sessions(conn, row[0]))
        out.append(_clear_machine_fp(conn, host_id, lock_wait))
    return "\n".join(out)


def _end_sessions(conn: psycopg.Connection[Any], role: str) -> str:
    """pg_terminate_backend every session of ``role``; one line saying what happened.

    Signalling another role's backend needs pg_signal_backend (or membership in that
    role); an owner without it is told so, and remove-host goes on."""
    with conn.transaction():
        pids = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()", (role,)
            ).fetchall()
        ]
    ended = refused = 0
    for pid in pids:
        done = terminate(conn, pid)
        ended += bool(done)
        refused += done is None
    if refused:
        return (
            f"could not end {refused} open session(s) of role {role}: this role lacks the right to "
            "signal them (GRANT pg_signal_backend to it, or a superuser runs pg_terminate_backend); "
            "they can no longer read or write"
        )
    return f"ended {ended} open session(s) of role {role}"


def terminate(conn: psycopg.Connection[Any], pid: int, xact_start: datetime | None = None) -> bool | None:
    """pg_terminate_backend(pid): True if ended, False if gone (or, with ``xact_start``, no
    longer in that transaction), None when this role may not signal it (pg_signal_backend)."""
    where = "pid = %s" + (" AND xact_start = %s" if xact_start is not None else "")
    params = (pid, xact_start) if xact_start is not None else (pid,)
    try:
        with conn.transaction():
            row = conn.execute(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {where}", params
            ).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return None
    return bool(row and row[0])


def _clear_machine_fp(conn: psycopg.Connection[Any], host_id: str, lock_wait: str) -> str:
    """Clear the hosts row's machine fingerprint, waiting at most ``lock_wait`` for it."""
    try:
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(lock_wait)))
            conn.execute("UPDATE hosts SET machine_fp = NULL WHERE host_id = %s", (host_id,))
    except psycopg.errors.LockNotAvailable:
        return (
            f"machine fingerprint of host_id {host_id} NOT cleared: its hosts row stayed locked for "
            f"{lock_wait} (a session still open); run wgsyncd db remove-host {host_id} again"
        )
    return f"machine fingerprint of host_id {host_id} cleared"


def add_member(conn: psycopg.Connection[Any], role: str, group: str, password: str | None = None) -> str:
    """``add-operator`` / ``add-reader``: LOGIN role ``role`` (created if missing) joins ``group``."""
    check_name("role", role)
    with guarded(conn, f"add {group} member {role}"), conn.transaction():
        created = _ensure_login_role(conn, role, group, password)
    return f"role {role} is in {group}" + (" (role created)" if created else "")


def hosts(conn: psycopg.Connection[Any]) -> list[HostBinding]:
    """Every host that is bound or ever synced: binding, fingerprint, last sync and its status."""
    with guarded(conn, "list hosts"), conn.transaction():
        rows = conn.execute(
            "SELECT coalesce(b.host_id, h.host_id), b.role_name, b.created_at, h.machine_fp, h.last_seen, "
            "(SELECT s.status FROM sync_status s WHERE s.host_id = coalesce(b.host_id, h.host_id) "
            " ORDER BY s.started_at DESC, s.id DESC LIMIT 1) "
            "FROM host_roles b FULL JOIN hosts h ON h.host_id = b.host_id ORDER BY 1"
        ).fetchall()
    return [HostBinding(*r) for r in rows]


def check_name(what: str, value: str) -> None:
    """Role names and host ids: 1-63 / 1-128 printable characters (PostgreSQL truncates at 63)."""
    limit = 63 if what == "role" else 128
    if not value or len(value.encode()) > limit or not value.isprintable():
        raise StoreError(f"{what}: must be 1 to {limit} printable characters")
