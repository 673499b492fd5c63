"""The `wgsyncd` command: parse, call one room, print (text or --json). Thin on purpose."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import click

from wgsyncd import __version__, config, render
from wgsyncd.fleet_cli import fleet as fleet_group

log = logging.getLogger("wgsyncd")


def _emit(obj: Any) -> None:
    """Print JSON output: stable keys, one document."""
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _load(ctx: click.Context) -> config.Config:
    """Load the config once per command; a bad key ends the command with exit 2 naming the key."""
    try:
        cfg = config.load(ctx.obj["config_path"])
    except config.ConfigError as exc:
        click.echo(f"wgsyncd: config: {exc}", err=True)
        sys.exit(2)
    _setup_logs(ctx, cfg.log_level)
    return cfg


def _setup_logs(ctx: click.Context, level_from_config: str) -> None:
    """Logging for one-shot commands, the same as the daemon's (journal, stderr or JSON)."""
    from wgsyncd import logs

    logs.setup(ctx.obj["log_level"] or level_from_config, json_logs=ctx.obj["json_logs"])


def _connect(cfg: config.Config):
    """Open the database or exit 1 with the store's one-line reason."""
    from wgsyncd import store

    try:
        return store.connect(cfg.database)
    except store.StoreError as exc:
        click.echo(f"wgsyncd: {exc}", err=True)
        sys.exit(1)


@contextlib.contextmanager
def _database(cfg: config.Config) -> Iterator[Any]:
    """A connection for one command: a StoreError becomes one line on stderr and exit 1."""
    from wgsyncd import store

    conn = _connect(cfg)
    try:
        yield conn
    except store.StoreError as exc:
        click.echo(f"wgsyncd: {exc}", err=True)
        sys.exit(1)
    finally:
        conn.close()


@click.group()
@click.version_option(__version__, prog_name="wgsyncd")
@click.option(
    "--config",
    "config_path",
    envvar="WGSYNCD_CONFIG",
    help="Config file (default /etc/wgsyncd/wgsyncd.toml).",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None)
@click.option("--json-logs", is_flag=True, help="One JSON object per log line (containers).")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, log_level: str | None, json_logs: bool) -> None:
    """Keep a WireGuard host's state (kernel, wgrest, conf files) durable in PostgreSQL."""
    ctx.obj = {"config_path": config_path, "log_level": log_level, "json_logs": json_logs}


main.add_command(fleet_group)  # `wgsyncd fleet ...`: the read side across hosts (fleet_cli.py)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Full state as JSON (secrets as fingerprints).")
@click.pass_context
def collect(ctx: click.Context, as_json: bool) -> None:
    """Read and merge the sources and print the result; no database."""
    from wgsyncd import cycle

    state = cycle.collect(_load(ctx))
    if as_json:
        _emit(render.state_dict(state))
    else:
        click.echo(render.state_text(state))


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def drift(ctx: click.Context, as_json: bool) -> None:
    """Show where the kernel, the conf files and wgrest disagree (exit 3 if they do)."""
    from wgsyncd import cycle

    state = cycle.collect(_load(ctx))
    if as_json:
        _emit([render.drift_dict(d) for d in state.drift])
    else:
        for d in state.drift:
            click.echo(str(d))
        if not state.drift:
            click.echo("no drift")
    sys.exit(3 if state.drift else 0)


@main.command()
@click.pass_context
def sync(ctx: click.Context) -> None:
    """Run one cycle into the database (exit 0 ok, 4 partial, 1 failed)."""
    from wgsyncd import cycle, progress, signing, store

    cfg = _load(ctx)
    bar = progress.Progress("sync", enabled=progress.wanted(json_logs=ctx.obj["json_logs"]))
    try:
        with _database(cfg) as conn:
            bar.phase("checking the schema")
            store.prepare(conn, cfg.database.auto_migrate)
            report = cycle.sync_once(cfg, conn, progress=bar.phase)
    except signing.SigningError as exc:
        bar.close()
        click.echo(f"wgsyncd: {exc}", err=True)
        sys.exit(1)
    finally:
        bar.close()
    click.echo(report.summary())
    sys.exit(4 if report.status == "partial" else 0)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--host", "host_id", default=None, help="A host_id; default: every host.")
@click.option("--limit", default=10, show_default=True, help="Cycles per host.")
@click.option("--local", is_flag=True, help="This host's daemon only, from its last-cycle file; no database.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, host_id: str | None, limit: int, local: bool) -> None:
    """The last cycles recorded in sync_status, newest first (exit 1 if --local is unhealthy)."""
    from wgsyncd import store

    cfg = _load(ctx)
    if local:
        _local_status(cfg, as_json)
        return
    with _database(cfg) as conn:
        rows = store.status(conn, host_id=host_id, limit=limit)
        hosts = {r.host_id for r in rows} | ({host_id} if host_id else set())
        warnings = _unsealed_warnings(conn, sorted(hosts))
    for w in warnings:
        click.echo(w, err=True)
    if as_json:
        _emit([render.plain(r) for r in rows])
        return
    if rows and sys.stdout.isatty():  # a person reading: a table; a pipe keeps key=value lines
        click.echo(render.table([render.plain(r) for r in rows], STATUS_COLUMNS))
        return
    for r in rows:
        click.echo(_status_line(render.plain(r)))
    if not rows:
        click.echo("no cycles recorded yet")


def _unsealed_warnings(conn: Any, host_ids: list[str]) -> list[str]:
    """`restore will be incomplete` for each host whose latest config version has no sealed secrets."""
    from wgsyncd import restore

    return [w for w in (restore.unsealed_warning(conn, h) for h in host_ids) if w]


def _local_status(cfg: config.Config, as_json: bool) -> None:
    """The healthcheck: the daemon's last cycle is recent and did not fail."""
    from wgsyncd import heartbeat

    try:
        beat = heartbeat.read(cfg.daemon.state_dir)
    except (OSError, ValueError, KeyError) as exc:
        click.echo(f"wgsyncd: no usable last-cycle file in {cfg.daemon.state_dir}: {exc}", err=True)
        sys.exit(1)
    stale = time.time() - beat.time > beat.stale_after()
    dir_error = heartbeat.probe_writable(cfg.daemon.state_dir) if stale else None
    problem = beat.problem(state_dir_error=dir_error)
    if as_json:
        _emit(
            {
                **render.plain(beat),
                "healthy": problem is None,
                "problem": problem,
                "state_dir_error": dir_error,
            }
        )
    else:
        click.echo(problem or f"healthy: {beat.summary}{beat.spool_text()}")
    sys.exit(1 if problem else 0)


STATUS_COLUMNS = ("host_id", "started_at", "status", "interfaces", "peers", "duration_ms", "rows_written")


def _status_line(row: dict[str, Any]) -> str:
    """One sync_status row as text, whatever columns the store returns."""
    return "  ".join(f"{k}={row[k]}" for k in STATUS_COLUMNS if k in row)


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Apply pending schema migrations (the schema owner's DSN; concurrent runs queue)."""
    from wgsyncd import store

    cfg = _load(ctx)
    with _database(cfg) as conn:
        applied = store.migrate(conn)
    click.echo(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))


def _password(path: str | None) -> str | None:
    """The password in FILE (first line), or None; the error names the file, never the content."""
    if path is None:
        return None
    try:
        with open(path) as fh:
            value = fh.readline().rstrip("\r\n")
    except OSError as exc:
        click.echo(f"wgsyncd: --password-file {path}: cannot read: {exc.strerror}", err=True)
        sys.exit(1)
    if not value:
        click.echo(f"wgsyncd: --password-file {path}: empty", err=True)
        sys.exit(1)
    return value


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
    from wgsyncd.restore import RestoreError, trust
    from wgsyncd.store import roles, signed

    password = _password(password_file)
    try:
        keys = [signing.parse_verify_key(k, "--signing-key") for k in signing_keys]  # all checked first
        with _database(_load(ctx)) as conn:
            click.echo(roles.add_host(conn, host_id, role, password))
            for key in keys:
                done = "pinned" if signed.pin_signing_key(conn, host_id, key) else "already pinned"
                click.echo(f"host {host_id}: signing key {key} {done} in the database")
                if trusted_keys:
                    trust.add_pin(trusted_keys, host_id, key)
                    click.echo(f"host {host_id}: signing key {key} pinned in {trusted_keys}")
    except (signing.SigningError, RestoreError) as exc:
        click.echo(f"wgsyncd: db add-host: {exc}", err=True)
        sys.exit(1)


@db.command("remove-host")
@click.argument("host_id")
@click.pass_context
def db_remove_host(ctx: click.Context, host_id: str) -> None:
    """Unbind HOST_ID: its role can no longer read or write (data is kept)."""
    from wgsyncd.store import roles

    with _database(_load(ctx)) as conn:
        click.echo(roles.remove_host(conn, host_id))


@db.command("hosts")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def db_hosts(ctx: click.Context, as_json: bool) -> None:
    """Bindings (host_id, role, machine fingerprint) and each host's last sync."""
    import dataclasses

    from wgsyncd.store import roles

    with _database(_load(ctx)) as conn:
        rows = roles.hosts(conn)
    if as_json:
        _emit([dataclasses.asdict(r) for r in rows])
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

    password = _password(password_file)
    with _database(_load(ctx)) as conn:
        click.echo(roles.add_member(conn, role, roles.OPERATOR_GROUP, password))


@db.command("add-reader")
@click.argument("role")
@click.option("--password-file", default=None, help="Set the role's password from this file.")
@click.pass_context
def db_add_reader(ctx: click.Context, role: str, password_file: str | None) -> None:
    """Make ROLE (created if missing) a reader: public tables, never sealed secrets."""
    from wgsyncd.store import roles

    password = _password(password_file)
    with _database(_load(ctx)) as conn:
        click.echo(roles.add_member(conn, role, roles.READER_GROUP, password))


@main.command("check-config")
@click.pass_context
def check_config(ctx: click.Context) -> None:
    """Validate the config; errors name the key (exit 1)."""
    try:
        cfg = config.load(ctx.obj["config_path"], require_file=True)
    except config.ConfigError as exc:
        click.echo(f"wgsyncd: config: {exc}", err=True)
        sys.exit(1)
    if not cfg.database.dsn:
        click.echo("wgsyncd: config: database.dsn: not set", err=True)
        sys.exit(1)
    from wgsyncd import store

    try:
        store.check_transport(cfg.database)
    except store.StoreError as exc:
        click.echo(f"wgsyncd: config: {exc}", err=True)
        sys.exit(1)
    click.echo(f"config ok: {cfg.source_path or 'defaults'} (host_id {cfg.host_id})")


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """The daemon: sync every interval, notify systemd, until SIGTERM."""
    from wgsyncd import daemon

    sys.exit(
        daemon.run(ctx.obj["config_path"], log_level=ctx.obj["log_level"], json_logs=ctx.obj["json_logs"])
    )


@main.command("metrics")
@click.pass_context
def metrics_cmd(ctx: click.Context) -> None:
    """Print the Prometheus exposition of the daemon's last cycle (from its state dir; no database)."""
    from wgsyncd import metrics

    cfg = _load(ctx)
    try:
        snap = metrics.load(cfg.daemon.state_dir)
    except OSError as exc:
        click.echo(
            f"wgsyncd: metrics: no last cycle in {cfg.daemon.state_dir} ({exc.strerror}); "
            "`wgsyncd run` writes it after every cycle",
            err=True,
        )
        sys.exit(1)
    except ValueError as exc:
        click.echo(f"wgsyncd: metrics: {exc}", err=True)
        sys.exit(1)
    click.echo(metrics.render(snap), nl=False)


@main.command("persist-restore")
@click.option("--dry-run", is_flag=True, help="Show which peers would be put back; change nothing.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def persist_restore(ctx: click.Context, dry_run: bool, as_json: bool) -> None:
    """Put back the peers of the persist snapshot that the interfaces lack (wgsyncd-persist.service)."""
    from wgsyncd import persist, progress

    cfg = _load(ctx)
    if not cfg.persist.enabled:
        click.echo("persist is not enabled ([persist] enabled = false): nothing to do")
        return
    bar = progress.Progress("putting peers back", enabled=progress.wanted(json_logs=ctx.obj["json_logs"]))
    try:
        results, errors = persist.restore(
            cfg.persist.directory,
            socket_dir=cfg.kernel.socket_dir,
            wg_command=cfg.kernel.wg_command,
            dry_run=dry_run,
            progress=bar,
        )
    finally:
        bar.close()
    verb = "would put back" if dry_run else "put back"
    for r in results:
        if r.skipped:
            log.warning("persist: %s: skipped: %s", r.interface, r.skipped)
        else:
            log.info("persist: %s: %s %d peer(s)", r.interface, verb, len(r.added))
        for key in r.added:
            log.info("persist: %s: %s peer %s", r.interface, verb, key)
        for held in r.kept_ips:
            log.warning("persist: %s: peer %s left with the present peer holding it", r.interface, held)
    for e in errors:
        log.error("persist: %s", e)
    if as_json:
        _emit({"dry_run": dry_run, "interfaces": [render.plain(r) for r in results], "errors": errors})
    else:
        for r in results:
            click.echo(
                f"{r.interface}: "
                + (f"skipped ({r.skipped})" if r.skipped else f"{verb} {len(r.added)} peers")
            )
        for e in errors:
            click.echo(f"wgsyncd: persist-restore: {e}", err=True)
    sys.exit(1 if errors else 0)


@main.group()
def keys() -> None:
    """The operator's recovery key (secrets are sealed to it) and the hosts' signing keys (pins)."""


@keys.command("init-recovery")
@click.argument("path")
def init_recovery(path: str) -> None:
    """Make a recovery key pair: the private half goes to PATH (0600, never overwritten)."""
    from wgsyncd import secrets

    try:
        made = secrets.init_recovery(path)
    except FileExistsError:
        click.echo(f"wgsyncd: {path}: already exists; refusing to overwrite a recovery key", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"wgsyncd: {path}: cannot write: {exc.strerror}", err=True)
        sys.exit(1)
    click.echo(f"wrote the recovery private key to {path}: keep it offline; restore needs it")
    click.echo("put this line into every host's wgsyncd.toml:")
    click.echo(f'recovery_public_key = "{made.public}"')


@keys.command("show-signing")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def show_signing(ctx: click.Context, as_json: bool) -> None:
    """This host's signing verify key (made now if missing), as a line for the operator's trust file."""
    from wgsyncd import signing

    cfg = _load(ctx)
    try:
        key = signing.load_or_create(cfg.daemon.state_dir)
    except signing.SigningError as exc:
        click.echo(f"wgsyncd: {exc}", err=True)
        sys.exit(1)
    if as_json:
        _emit(
            {"host_id": cfg.host_id, "verify_key": key.verify_key, "key_id": signing.key_id(key.verify_key)}
        )
        return
    click.echo(f"{cfg.host_id} {key.verify_key}")
    click.echo(
        f"# pin it where you keep the recovery key: wgsyncd keys trust {cfg.host_id} {key.verify_key} "
        "--trusted-keys FILE",
        err=True,
    )


@keys.command("trust")
@click.argument("host_id")
@click.argument("verify_key")
@click.option(
    "--trusted-keys", "trusted_keys", required=True, help="The operator's trust file (made if missing)."
)
@click.option("--comment", default="", help="Kept on the line (e.g. when and how the key was checked).")
def trust_key(host_id: str, verify_key: str, trusted_keys: str, comment: str) -> None:
    """Pin a host's signing verify key: restore accepts versions signed by any key pinned for it."""
    from wgsyncd.restore import RestoreError, trust

    try:
        added = trust.add_pin(trusted_keys, host_id, verify_key, comment)
    except RestoreError as exc:
        click.echo(f"wgsyncd: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"wgsyncd: {trusted_keys}: cannot write: {exc.strerror}", err=True)
        sys.exit(1)
    click.echo(
        f"{'pinned' if added else 'already pinned'}: host {host_id} key {verify_key} in {trusted_keys}"
    )


@main.command()
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

    cfg = _load(ctx)
    host = host_id or cfg.host_id
    with _database(cfg) as conn:
        try:
            rows = restore.history(conn, host, limit, trusted_keys)
        except restore.RestoreError as exc:
            click.echo(f"wgsyncd: {exc}", err=True)
            sys.exit(1)
    if as_json:
        _emit(rows)
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


@main.command("restore")
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
    from wgsyncd import restore, store

    if not (to_dir or do_apply or wgrest_url):
        click.echo("wgsyncd: restore: choose a target: --to-dir [DIR], --apply or --to-wgrest URL", err=True)
        sys.exit(2)
    from wgsyncd import progress

    cfg = _load(ctx)
    out: dict[str, Any] = {}
    bar = progress.Progress("restore", enabled=progress.wanted(json_logs=ctx.obj["json_logs"]))
    try:
        when = restore.parse_time(at) if at else None
        token = restore.read_token(token_file) if token_file else None
        conn = _connect(cfg)
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
        out["host_id"], out["version"] = loaded.host_id, loaded.version
        out["created_at"] = loaded.created_at.isoformat()
        out["without_secrets"] = loaded.without_secrets
        out["warnings"] = loaded.warnings
        targets: dict[str, Callable[[bool], Any]] = {}
        if to_dir:
            targets["files"] = lambda dry: restore.to_dir(loaded, to_dir, dry_run=dry)
        if do_apply:
            targets["interfaces"] = lambda dry: restore.apply(
                loaded,
                socket_dir=cfg.kernel.socket_dir,
                wg_command=cfg.kernel.wg_command,
                via=apply_via,
                dry_run=dry,
            )
        if wgrest_url:
            targets["wgrest"] = lambda dry: restore.to_wgrest(
                loaded, wgrest_url, token=token, dry_run=dry, insecure=insecure
            )
        # every target checks everything it needs before its own first write; with several
        # targets, all of them check (a dry run) before the first one writes anything
        peers = sum(len(i.peers) for i in loaded.interfaces.values())
        if not dry_run and len(targets) > 1:
            for key, check in targets.items():
                bar.phase(f"checking {key} ({len(loaded.interfaces)} interfaces, {peers} peers)")
                check(True)
        for index, (key, run_target) in enumerate(targets.items()):
            bar.phase(
                f"{key} ({index + 1}/{len(targets)}): {len(loaded.interfaces)} interfaces, {peers} peers"
            )
            out[key] = run_target(dry_run)
    except (store.StoreError, restore.RestoreError) as exc:
        bar.close()
        from wgsyncd.validate import shown

        click.echo(f"wgsyncd: restore: {shown(str(exc), 4000)}", err=True)  # DB text: no escapes
        sys.exit(1)
    bar.close()
    if as_json:
        _emit(restore.as_json({**out, "dry_run": dry_run}))
        return
    _print_restore(out, dry_run)


def _print_restore(out: dict[str, Any], dry_run: bool) -> None:
    """Text output of restore: one line per file/interface/device; diffs on a dry run."""
    verb = "would restore" if dry_run else "restored"
    click.echo(f"{verb} host {out['host_id']} version {out['version']} ({out['created_at']})")
    for name in out["without_secrets"]:
        click.echo(f"  warning: {name}: restored without keys (they were never stored)")
    for f in out.get("files", []):
        extra = f", backup {f.backup}" if f.backup else ""
        click.echo(
            f"  {f.path}: {'would be ' if dry_run and f.action != 'unchanged' else ''}{f.action}{extra}"
        )
        if dry_run and f.diff:
            click.echo(f.diff, nl=False)
    for ch in out.get("interfaces", []):
        click.echo(f"  {ch.summary()}" + (" (dry run)" if dry_run else ""))
    for ch in out.get("wgrest", []):
        click.echo(f"  {ch.summary()}" + (" (dry run)" if dry_run else ""))


if __name__ == "__main__":
    main()
