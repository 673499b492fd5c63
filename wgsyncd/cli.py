"""The `wgsyncd` command: parse, call one room, print (text or --json). Thin on purpose."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from wgsyncd import __version__, config, render

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
    """Logging for one-shot commands: the daemon's own setup when present, else plain stderr."""
    level = ctx.obj["log_level"] or level_from_config
    try:
        from wgsyncd import logs

        logs.setup(level, json_logs=ctx.obj["json_logs"])
    except ImportError:
        logging.basicConfig(level=level.upper(), format="wgsyncd: %(levelname)s %(message)s")


def _connect(cfg: config.Config):
    """Open the database or exit 1 with the store's one-line reason."""
    from wgsyncd import store

    try:
        return store.connect(cfg.database)
    except store.StoreError as exc:
        click.echo(f"wgsyncd: {exc}", err=True)
        sys.exit(1)


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
    from wgsyncd import cycle, store

    cfg = _load(ctx)
    conn = _connect(cfg)
    try:
        if cfg.database.auto_migrate:
            store.migrate(conn)
        report = cycle.sync_once(cfg, conn)
    except store.StoreError as exc:
        click.echo(f"wgsyncd: {exc}", err=True)
        sys.exit(1)
    finally:
        conn.close()
    click.echo(report.summary())
    sys.exit(4 if report.status == "partial" else 0)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--host", "host_id", default=None, help="A host_id; default: every host.")
@click.option("--limit", default=10, show_default=True, help="Cycles per host.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, host_id: str | None, limit: int) -> None:
    """The last cycles recorded in sync_status, newest first."""
    from wgsyncd import store

    cfg = _load(ctx)
    conn = _connect(cfg)
    try:
        rows = store.status(conn, host_id=host_id, limit=limit)
    except store.StoreError as exc:
        click.echo(f"wgsyncd: {exc}", err=True)
        sys.exit(1)
    finally:
        conn.close()
    if as_json:
        _emit([render.plain(r) for r in rows])
        return
    for r in rows:
        click.echo(_status_line(render.plain(r)))
    if not rows:
        click.echo("no cycles recorded yet")


def _status_line(row: dict[str, Any]) -> str:
    """One sync_status row as text, whatever columns the store returns."""
    keys = ("host_id", "started_at", "status", "interfaces", "peers", "duration_ms", "rows_written")
    return "  ".join(f"{k}={row[k]}" for k in keys if k in row)


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Apply pending schema migrations (safe to run from many hosts at once)."""
    from wgsyncd import store

    cfg = _load(ctx)
    conn = _connect(cfg)
    try:
        applied = store.migrate(conn)
    except store.StoreError as exc:
        click.echo(f"wgsyncd: {exc}", err=True)
        sys.exit(1)
    finally:
        conn.close()
    click.echo(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))


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
    click.echo(f"config ok: {cfg.source_path or 'defaults'} (host_id {cfg.host_id})")


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """The daemon: sync every interval, notify systemd, until SIGTERM."""
    from wgsyncd import daemon

    sys.exit(
        daemon.run(ctx.obj["config_path"], log_level=ctx.obj["log_level"], json_logs=ctx.obj["json_logs"])
    )


if __name__ == "__main__":
    main()
