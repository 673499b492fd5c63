"""The `wgsyncd` command: parse, call one room, print (text or --json). Thin on purpose.

The everyday commands are here; the `db` and `keys` groups and `history`/`restore`
live in :mod:`wgsyncd.commands` (one module each), imported when named (_Commands).
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from typing import Any

import click

from wgsyncd import __version__, config, render
from wgsyncd.commands.common import connect as _connect  # noqa: F401 -- for command blocks added here
from wgsyncd.commands.common import database as _database
from wgsyncd.commands.common import emit as _emit
from wgsyncd.commands.common import load as _load

log = logging.getLogger("wgsyncd")


class _Commands(click.Group):
    """The command group, with the groups of wgsyncd/commands/ imported only when named.

    Why: importing them all costs every `wgsyncd sync` (a timer fires it every
    minute) 5-15 ms for commands it never runs; --help and the man page test still
    list them all (list_commands).
    """

    LAZY = {  # command name -> (module in wgsyncd.commands, attribute)
        "db": ("db", "db"),
        "keys": ("keys", "keys"),
        "history": ("restore", "history"),
        "restore": ("restore", "restore_cmd"),
        "fleet": ("fleet", "fleet"),  # the read side across hosts
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY and cmd_name not in self.commands:
            import importlib

            module, attr = self.LAZY[cmd_name]
            self.add_command(getattr(importlib.import_module(f"wgsyncd.commands.{module}"), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands)
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
    process = bool(ctx.obj and ctx.obj.get("process"))  # entry(): this process is wgsyncd's own
    ctx.obj = {"config_path": config_path, "log_level": log_level, "json_logs": json_logs, "process": process}


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
    from wgsyncd import gcpolicy

    with gcpolicy.one_shot():  # before the imports: see wgsyncd/gcpolicy.py
        _sync(ctx)


def _sync(ctx: click.Context) -> None:
    """The body of `sync` (its exit codes), with the collector off."""
    from wgsyncd import cycle, gcpolicy, malloc, progress, signing, store, synccache

    malloc.tune()  # a one-shot sync at 10,000 peers has the daemon's transients
    cfg = _load(ctx)
    bar = progress.Progress("sync", enabled=progress.wanted(json_logs=ctx.obj["json_logs"]))
    try:
        with _database(cfg) as conn:
            bar.phase("checking the schema")
            store.prepare(conn, cfg.database.auto_migrate)
            cached = synccache.load(cfg)  # timer mode: what the last run parsed, merged and wrote
            synccache.attach(cached, conn, cfg.host_id)
            try:  # the memo file is written by a child while the cycle writes (synccache.start_save)
                start = functools.partial(synccache.start_save, cfg, cached)
                report = cycle.sync_once(cfg, conn, progress=bar.phase, memo=cached.memo, collected=start)
                synccache.save(cfg, cached, conn)
            finally:
                synccache.finish(cfg, cached)
    except signing.SigningError as exc:
        bar.close()
        click.echo(f"wgsyncd: {exc}", err=True)
        sys.exit(1)
    finally:
        bar.close()
    click.echo(report.summary())
    code = 4 if report.status == "partial" else 0
    if ctx.obj["process"]:  # all is written and closed: skip freeing it one object at a time
        gcpolicy.leave(code)
    sys.exit(code)


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


# the text columns of `status` (--json has every column, config_rows_written and drift too)
STATUS_COLUMNS = ("host_id", "started_at", "status", "interfaces", "peers", "duration_ms")


def _status_line(row: dict[str, Any]) -> str:
    """One sync_status row as ``key=value`` text (a pipe), the columns of STATUS_COLUMNS."""
    return "  ".join(f"{k}={row[k]}" for k in STATUS_COLUMNS if k in row)


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


def entry() -> None:
    """The process's entry point (the installed `wgsyncd`, `python -m wgsyncd`).

    ``main`` with this context marked as wgsyncd's own process: a one-shot `sync` may
    then end it without the interpreter's teardown (gcpolicy.leave). Click's
    in-process test runner calls ``main`` itself, which always returns through sys.exit.
    """
    main(obj={"process": True})


if __name__ == "__main__":
    entry()
