"""`wgsyncd db ...`: schema migrations and the host / operator / reader roles (owner DSN)."""

from __future__ import annotations

import sys

import click

from wgsyncd.commands.common import database, emit, load, read_password


@click.group()
def db() -> None:
    """Database maintenance."""


@db.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Apply pending schema migrations (the schema owner's DSN; concurrent runs queue)."""
    from wgsyncd import store

    cfg = load(ctx)
    with database(cfg) as conn:
        applied = store.migrate(conn)
    click.echo(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))


@db.command("add-host")
@click.argument("host_id")
@click.option("--role", required=True, help="The host's LOGIN role (created if missing).")
@click.option("--password-file", default=None, help="Set the role's password from this file.")
@click.option(
    "--signing-key",
    "signing_keys",
    multiple=True,
    help="Pin the host's verify key (`wgsyncd keys show-signing` on the host); repeatable.",
)
@click.option(
    "--trusted-keys",
    default=None,
    help="Also pin --signing-key in this trust file (the one restore trusts; keep it offline).",
)
@click.pass_context
def db_add_host(
    ctx: click.Context,
    host_id: str,
    role: str,
    password_file: str | None,
    signing_keys: tuple[str, ...],
    trusted_keys: str | None,
) -> None:
    """Bind a host's LOGIN role to HOST_ID (owner DSN; re-running is harmless)."""
    from wgsyncd import signing
    from wgsyncd.restore import RestoreError
    from wgsyncd.store import roles, signed

    password = read_password(password_file)
    try:
        keys = [signing.parse_verify_key(k, "--signing-key") for k in signing_keys]  # all checked first
        with database(load(ctx)) as conn:
            click.echo(roles.add_host(conn, host_id, role, password))
            for key in keys:
                done = "pinned" if signed.pin_signing_key(conn, host_id, key) else "already pinned"
                click.echo(f"host {host_id}: signing key {key} {done} in the database")
                if trusted_keys:
                    click.echo(_pin_in_file(trusted_keys, host_id, key))
    except (signing.SigningError, RestoreError) as exc:
        click.echo(f"wgsyncd: db add-host: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"wgsyncd: db add-host: {trusted_keys}: cannot write: {exc.strerror}", err=True)
        sys.exit(1)


def _pin_in_file(path: str, host_id: str, key: str) -> str:
    """Pin ``key`` in the operator's trust file; the line says what the file now holds
    (already there, and retired: `keys retire` set that, and add-host does not undo it)."""
    from wgsyncd.restore import trust

    added, bound = trust.pin(path, host_id, key)
    if added:
        return f"host {host_id}: signing key {key} pinned in {path}"
    retired = "" if bound is None else f", retired after version {bound}"
    return f"host {host_id}: signing key {key} already pinned in {path}{retired}"


@db.command("remove-host")
@click.argument("host_id")
@click.pass_context
def db_remove_host(ctx: click.Context, host_id: str) -> None:
    """Unbind HOST_ID: its role can no longer read or write (data is kept)."""
    from wgsyncd.store import roles

    with database(load(ctx)) as conn:
        click.echo(roles.remove_host(conn, host_id))


@db.command("hosts")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def db_hosts(ctx: click.Context, as_json: bool) -> None:
    """Bindings (host_id, role, machine fingerprint) and each host's last sync."""
    import dataclasses

    from wgsyncd.store import roles

    with database(load(ctx)) as conn:
        rows = roles.hosts(conn)
    if as_json:
        emit([dataclasses.asdict(r) for r in rows])
        return
    for r in rows:
        seen = r.last_seen.isoformat(timespec="seconds") if r.last_seen else "never"
        click.echo(f"{r.host_id}  role={r.role_name or '-'}  last_sync={seen} {r.last_status or ''}".rstrip())


@db.command("add-operator")
@click.argument("role")
@click.option("--password-file", default=None, help="Set the role's password from this file.")
@click.pass_context
def db_add_operator(ctx: click.Context, role: str, password_file: str | None) -> None:
    """Make ROLE (created if missing) an operator: reads every host."""
    from wgsyncd.store import roles

    password = read_password(password_file)
    with database(load(ctx)) as conn:
        click.echo(roles.add_member(conn, role, roles.OPERATOR_GROUP, password))


@db.command("add-reader")
@click.argument("role")
@click.option("--password-file", default=None, help="Set the role's password from this file.")
@click.pass_context
def db_add_reader(ctx: click.Context, role: str, password_file: str | None) -> None:
    """Make ROLE (created if missing) a reader: public tables, never sealed secrets."""
    from wgsyncd.store import roles

    password = read_password(password_file)
    with database(load(ctx)) as conn:
        click.echo(roles.add_member(conn, role, roles.READER_GROUP, password))


@db.command("reap")
# the defaults sit well above an honest agent: a host role's own server-side bounds are 60 s
# idle in a transaction and 60 s a statement (roles.HOST_ROLE_SETTINGS); a first sync of
# 10,000 peers takes about 2 s
@click.option("--idle-after", type=click.FloatRange(0), default=120.0, show_default=True,
              help="Seconds idle inside a transaction.")  # fmt: skip
@click.option("--older-than", type=click.FloatRange(0), default=900.0, show_default=True,
              help="Seconds since the transaction began, busy or not.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="List them; end nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def db_reap(ctx: click.Context, idle_after: float, older_than: float, dry_run: bool, as_json: bool) -> None:
    """End host sessions holding a transaction open past a bound: one holds back vacuum for all."""
    import dataclasses

    from wgsyncd.store import reap

    with database(load(ctx)) as conn:
        found = reap.stuck(conn, idle_after, older_than)
        lines = [f"would end {s.describe()}" for s in found] if dry_run else reap.end(conn, found)
    if as_json:
        emit([{**dataclasses.asdict(s), "xact_start": s.xact_start.isoformat(), "result": line}
              for s, line in zip(found, lines, strict=True)])  # fmt: skip
        return
    click.echo("\n".join(lines) if lines else "no host session over the bounds")


@db.command("quota")
@click.argument("host_id", required=False)
@click.option("--default", "default", is_flag=True, help="The default quota: hosts without their own.")
@click.option("--max-interfaces", type=click.IntRange(0), default=None, help="Live interfaces it may hold.")
@click.option("--max-peers", type=click.IntRange(0), default=None, help="Live peers it may hold.")
@click.option("--max-bytes-per-day", default=None, help="Bytes of rows it may add per UTC day (16G, 512M).")
@click.option("--clear", is_flag=True, help="Remove the host's own quota (the default applies).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def db_quota(
    ctx: click.Context,
    host_id: str | None,
    default: bool,
    max_interfaces: int | None,
    max_peers: int | None,
    max_bytes_per_day: str | None,
    clear: bool,
    as_json: bool,
) -> None:
    """Show every host's quota and use today, or set / --clear HOST_ID's (or --default's)."""
    import dataclasses

    from wgsyncd.commands.common import fail
    from wgsyncd.store import StoreError, quota

    target = quota.DEFAULT if default else host_id
    if default and host_id:
        fail("db quota: give HOST_ID or --default, not both", 2)
    values = {"max_interfaces": max_interfaces, "max_peers": max_peers}
    try:
        if max_bytes_per_day is not None:
            values["max_bytes_per_day"] = quota.parse_size(max_bytes_per_day, "--max-bytes-per-day")
    except StoreError as exc:
        fail(f"db quota: {exc}", 2)
    values = {k: v for k, v in values.items() if v is not None}
    if (values or clear) and target is None:
        fail("db quota: name the HOST_ID (or --default) whose quota to change", 2)
    with database(load(ctx)) as conn:
        if clear:
            click.echo(quota.clear_quota(conn, target))  # type: ignore[arg-type]
        elif values:
            click.echo(quota.set_quota(conn, target, values))  # type: ignore[arg-type]
        else:
            dflt, rows = quota.quotas(conn)
            if target is not None:
                rows = [r for r in rows if r.host_id == target]
            if as_json:
                emit({"default": dataclasses.asdict(dflt) if dflt else None,
                      "hosts": [dataclasses.asdict(r) for r in rows]})  # fmt: skip
                return
            click.echo(quota.describe_default(dflt))
            for r in rows:
                click.echo(quota.describe(r))
