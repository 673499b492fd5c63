"""`wgsyncd history` and `wgsyncd restore`: options in, restore's result out.

The ordering rules (every target checked before the first write) live in
:mod:`wgsyncd.restore.targets`; this module only parses options and prints.
"""

from __future__ import annotations

import sys

import click

from wgsyncd.commands.common import connect, database, emit, load


@click.command()
@click.option("--host", "host_id", default=None, help="A host_id; default: this host's.")
@click.option("--limit", default=None, type=int, help="Newest N versions only.")
@click.option(
    "--trusted-keys", "trusted_keys", default=None, help="Also say whether restore would trust each."
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def history(
    ctx: click.Context, host_id: str | None, limit: int | None, trusted_keys: str | None, as_json: bool
) -> None:
    """The host's config versions, newest first (time, sync id, counts, sealed or not, signer)."""
    from wgsyncd import restore

    cfg = load(ctx)
    host = host_id or cfg.host_id
    with database(cfg) as conn:
        try:
            rows = restore.history(conn, host, limit, trusted_keys)
        except restore.RestoreError as exc:
            click.echo(f"wgsyncd: {exc}", err=True)
            sys.exit(1)
    if as_json:
        emit(rows)
        return
    for r in rows:
        sealed = "sealed" if r["sealed"] else "NO SECRETS"
        signed = f"key {r['signing_key_id']}" if r["signing_key_id"] else "UNSIGNED"
        signed += " (chain start)" if r["chain_start"] else ""
        signed += f"  trust: {r['trust']}" if "trust" in r else ""
        click.echo(
            f"v{r['version']}  {r['created_at']}  sync {r['sync_id']}  "
            f"{r['interfaces']} interfaces  {r['peers']} peers  {sealed}  {signed}"
        )
    if not rows:
        click.echo(f"host {host}: no config versions yet")


@click.command("restore")
@click.option("--host", "host_id", default=None, help="The host_id to restore from (any machine's).")
@click.option("--version", "version", type=int, default=None, help="Version number (see `history`).")
@click.option("--at", "at", default=None, help="The version current at this ISO time (UTC if no zone).")
@click.option("--interface", "interfaces", multiple=True, help="Only this interface (repeatable).")
@click.option(
    "--recovery-key",
    "recovery_key",
    default=None,
    help="The recovery private key file, or - for stdin (default: the systemd credential recovery-key).",
)
@click.option(
    "--trusted-keys", "trusted_keys", default=None, help="The operator's pinned host keys (`keys trust`)."
)
@click.option("--allow-unsigned", is_flag=True, help="Also restore a version written before signing (warns).")
@click.option(
    "--to-dir",
    "to_dir",
    is_flag=False,
    flag_value="/etc/wireguard",
    default=None,
    help="Write conf files here (default /etc/wireguard).",
)
@click.option("--apply", "do_apply", is_flag=True, help="Bring the running interfaces to the version.")
@click.option(
    "--apply-via",
    type=click.Choice(["auto", "uapi", "wg", "netlink"]),
    default="auto",
    show_default=True,
    help="auto: the control socket if present, else `wg syncconf` when wg is installed, else netlink.",
)
@click.option("--to-wgrest", "wgrest_url", default=None, help="Recreate peers through this wgrest URL.")
@click.option("--token-file", default=None, help="wgrest bearer token file.")
@click.option(
    "--insecure",
    is_flag=True,
    help="Allow --to-wgrest over plain http:// to another machine (token in clear).",
)
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option(
    "--allow-missing-secrets", is_flag=True, help="Restore interfaces whose keys were never stored."
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def restore_cmd(
    ctx: click.Context,
    host_id: str | None,
    version: int | None,
    at: str | None,
    interfaces: tuple[str, ...],
    recovery_key: str | None,
    trusted_keys: str | None,
    allow_unsigned: bool,
    to_dir: str | None,
    do_apply: bool,
    apply_via: str,
    wgrest_url: str | None,
    token_file: str | None,
    insecure: bool,
    dry_run: bool,
    allow_missing_secrets: bool,
    as_json: bool,
) -> None:
    """Restore a config version: conf files (--to-dir), running interfaces (--apply), wgrest."""
    from wgsyncd import progress, restore, store
    from wgsyncd.validate import shown

    if not (to_dir or do_apply or wgrest_url):
        click.echo("wgsyncd: restore: choose a target: --to-dir [DIR], --apply or --to-wgrest URL", err=True)
        sys.exit(2)
    cfg = load(ctx)
    bar = progress.Progress("restore", enabled=progress.wanted(json_logs=ctx.obj["json_logs"]))
    try:
        when = restore.parse_time(at) if at else None
        targets = restore.Targets(
            to_dir=to_dir,
            apply=do_apply,
            apply_via=apply_via,
            socket_dir=cfg.kernel.socket_dir,
            wg_command=cfg.kernel.wg_command,
            wgrest_url=wgrest_url,
            token=restore.read_token(token_file) if token_file else None,
            insecure=insecure,
        )
        conn = connect(cfg)
        bar.phase("loading and opening the version")
        try:
            loaded = restore.load(
                conn,
                host_id or cfg.host_id,
                version=version,
                at=when,
                interfaces=interfaces,
                recovery_key_file=recovery_key,
                allow_missing_secrets=allow_missing_secrets,
                trusted_keys=trusted_keys,
                allow_unsigned=allow_unsigned,
            )
        finally:
            conn.close()
        for warning in loaded.warnings:
            click.echo(f"wgsyncd: restore: {warning}", err=True)
        out = restore.outcome(loaded, restore.run(loaded, targets, dry_run=dry_run, phase=bar.phase), dry_run)
    except (store.StoreError, restore.RestoreError) as exc:
        bar.close()
        click.echo(f"wgsyncd: restore: {shown(str(exc), 4000)}", err=True)  # DB text: no escapes
        sys.exit(1)
    bar.close()
    if as_json:
        emit(restore.as_json(out))
    else:
        click.echo(restore.restore_text(out), nl=False)
