"""What every command shares: load the config, open the database, print JSON, fail in one line.

Exit codes: 2 for a bad config (the key is named), 1 for a database or input error;
the message is one line on stderr starting with ``wgsyncd:``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import click

from wgsyncd import config
from wgsyncd.canonical import sorted_text


def emit(obj: Any) -> None:
    """Print JSON output: stable keys, one document."""
    click.echo(sorted_text(obj, indent=2, default=str))


def fail(message: str, code: int = 1) -> NoReturn:
    """``wgsyncd: MESSAGE`` on stderr and exit ``code``."""
    click.echo(f"wgsyncd: {message}", err=True)
    sys.exit(code)


def load(ctx: click.Context) -> config.Config:
    """Load the config once per command; a bad key ends the command with exit 2 naming the key."""
    try:
        cfg = config.load(ctx.obj["config_path"])
    except config.ConfigError as exc:
        fail(f"config: {exc}", 2)
    setup_logs(ctx, cfg.log_level)
    return cfg


def setup_logs(ctx: click.Context, level_from_config: str) -> None:
    """Logging for one-shot commands, the same as the daemon's (journal, stderr or JSON)."""
    from wgsyncd import logs

    logs.setup(ctx.obj["log_level"] or level_from_config, json_logs=ctx.obj["json_logs"])


def connect(cfg: config.Config) -> Any:
    """Open the database or exit 1 with the store's one-line reason."""
    from wgsyncd import store

    try:
        return store.connect(cfg.database)
    except store.StoreError as exc:
        fail(str(exc))


@contextlib.contextmanager
def database(cfg: config.Config) -> Iterator[Any]:
    """A connection for one command: a StoreError becomes one line on stderr and exit 1."""
    from wgsyncd import store

    conn = connect(cfg)
    try:
        yield conn
    except store.StoreError as exc:
        fail(str(exc))
    finally:
        conn.close()


def read_password(path: str | None) -> str | None:
    """The password in FILE (first line), or None; the error names the file, never the content."""
    if path is None:
        return None
    try:
        with open(path) as fh:
            value = fh.readline().rstrip("\r\n")
    except OSError as exc:
        fail(f"--password-file {path}: cannot read: {exc.strerror}")
    if not value:
        fail(f"--password-file {path}: empty")
    return value
