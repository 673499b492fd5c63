"""`wgsyncd keys ...`: the operator's recovery key and the hosts' signing keys (pins)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from wgsyncd.commands.common import emit, load


@click.group()
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

    cfg = load(ctx)
    try:
        key = signing.load_or_create(cfg.daemon.state_dir)
    except signing.SigningError as exc:
        click.echo(f"wgsyncd: {exc}", err=True)
        sys.exit(1)
    if as_json:
        emit({"host_id": cfg.host_id, "verify_key": key.verify_key, "key_id": signing.key_id(key.verify_key)})
        return
    click.echo(f"{cfg.host_id} {key.verify_key}")
    click.echo(
        f"# pin it where you keep the recovery key: wgsyncd keys trust {cfg.host_id} {key.verify_key} "
        "--trusted-keys FILE",
        err=True,
    )


@contextmanager
def _editing(trusted_keys: str) -> Iterator[None]:
    """An edit of the operator's trust file: a refusal or a write error is one line and exit 1."""
    from wgsyncd.restore import RestoreError

    try:
        yield
    except RestoreError as exc:
        click.echo(f"wgsyncd: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"wgsyncd: {trusted_keys}: cannot write: {exc.strerror}", err=True)
        sys.exit(1)


@keys.command("trust")
@click.argument("host_id")
@click.argument("verify_key")
@click.option(
    "--trusted-keys", "trusted_keys", required=True, help="The operator's trust file (made if missing)."
)
@click.option("--comment", default="", help="Kept on the line (e.g. when and how the key was checked).")
def trust_key(host_id: str, verify_key: str, trusted_keys: str, comment: str) -> None:
    """Pin a host's signing verify key: restore accepts versions signed by any key pinned for it."""
    from wgsyncd.restore import trust

    with _editing(trusted_keys):
        added, bound = trust.pin(trusted_keys, host_id, verify_key, comment)
    retired = "" if bound is None else f" (retired after version {bound}: `keys retire` changes that)"
    done = "pinned" if added else "already pinned"
    click.echo(f"{done}: host {host_id} key {verify_key} in {trusted_keys}{retired}")


@keys.command("retire")
@click.argument("host_id")
@click.argument("verify_key")
@click.option(
    "--after-version",
    "after_version",
    type=int,
    required=True,
    help="The last version this key signed before it may have leaked (see `wgsyncd history`).",
)
@click.option("--trusted-keys", "trusted_keys", required=True, help="The operator's trust file.")
def retire_key(host_id: str, verify_key: str, after_version: int, trusted_keys: str) -> None:
    """Retire a pinned key (KEY: the verify key, or its key id as `history` prints it): the
    versions it signed up to N stay restorable; nothing newer it signs is."""
    from wgsyncd.restore import trust

    with _editing(trusted_keys):
        verify_key = trust.pinned_key(trusted_keys, host_id, verify_key)
        before = trust.retire_pin(trusted_keys, host_id, verify_key, after_version)
    was = "" if before is None else f" (it was retired after version {before})"
    click.echo(
        f"retired: host {host_id} key {verify_key} after version {after_version}{was} in {trusted_keys}; "
        "its heads no longer count, and a version above that number it signs is refused"
    )
    for other in trust.read_pins(trusted_keys).trusted_elsewhere(host_id, verify_key.strip()):
        click.echo(
            f"wgsyncd: warning: key {verify_key} is also pinned, not retired, for host {other}: "
            f"if it leaked, retire it there too (wgsyncd keys retire {other} {verify_key} ...)",
            err=True,
        )
