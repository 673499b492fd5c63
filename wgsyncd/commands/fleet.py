"""`wgsyncd fleet ...`: the fleet questions on the command line (the queries live in wgsyncd/fleet.py).

Output as `status` does it: an aligned table on a terminal, one ``key=value`` line per
row when piped, JSON with ``--json``. Names, comments and sources come from the shared
database, which any compromised host can write: every text cell is shown with its
control and bidi characters escaped, so a peer name cannot drive the operator's
terminal or forge an extra output line (JSON escapes them by itself).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from wgsyncd import render, validate
from wgsyncd.commands import common

HOST_COLUMNS = (
    "host_id",
    "hostname",
    "state",
    "last_ok_at",
    "last_status",
    "interval_s",
    "interfaces",
    "peers",
)
PEER_COLUMNS = (
    "host_id",
    "interface",
    "name",
    "public_key",
    "allowed_ips",
    "latest_handshake",
    "rx_bytes",
    "tx_bytes",
)
FIND_COLUMNS = ("kind", "host_id", "hostname", "interface", "name", "sources", "addresses", "removed_at")
STALE_COLUMNS = ("host_id", "interface", "name", "public_key", "handshake", "allowed_ips")
CONFLICT_COLUMNS = (
    "kind",
    "scope",
    "host_a",
    "interface_a",
    "name_a",
    "value_a",
    "host_b",
    "interface_b",
    "name_b",
    "value_b",
    "overlap_count",
)
TOP_COLUMNS = ("host_id", "interface", "name", "public_key", "rx_bytes", "tx_bytes", "total_bytes")


@click.group("fleet")
def fleet() -> None:
    """Questions across every host, from the database (an operator or reader role; read only)."""


@fleet.command("hosts")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def hosts_cmd(ctx: click.Context, as_json: bool) -> None:
    """Every host; state 'stopped' when its last ok cycle is older than 3 of its intervals."""
    _show(_ask(ctx, "hosts"), HOST_COLUMNS, as_json, "no hosts recorded yet")


@fleet.command("peers")
@click.option("--json", "as_json", is_flag=True)
@click.option("--host", "host_id", default=None, help="One host_id; default: every host.")
@click.pass_context
def peers_cmd(ctx: click.Context, as_json: bool, host_id: str | None) -> None:
    """Every current peer with its latest handshake and bytes received/sent."""
    rows = _ask(ctx, "peers", host_id)
    _show(rows, PEER_COLUMNS, as_json, "no peers")


@fleet.command("find")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def find_cmd(ctx: click.Context, key: str, as_json: bool) -> None:
    """Where public KEY lives: host, interface, peer name, sources (exit 3 when nowhere)."""
    from wgsyncd import fleet as q

    _checked(lambda: q.check_key(key))
    rows = _ask(ctx, "find", key.strip())
    _show(rows, FIND_COLUMNS, as_json, f"{key.strip()}: on no host")
    if not rows:
        sys.exit(3)


@fleet.command("stale")
@click.option("--days", default="7", show_default=True, help="No handshake for this many days.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def stale_cmd(ctx: click.Context, days: str, as_json: bool) -> None:
    """Enabled peers without a handshake for N days; those that never had one are counted apart."""
    from wgsyncd import fleet as q

    n = _checked(lambda: q.parse_days(days))
    found = _ask(ctx, "stale", n)
    rows = [{**r, "handshake": r["latest_handshake"] or "never"} for r in found.peers]
    if as_json:
        common.emit(
            {"days": n, "stale": len(rows), "never": found.never, "peers": [render.plain(r) for r in rows]}
        )
        return
    _show(rows, STALE_COLUMNS, False, None)
    if _on_terminal():
        click.echo(found.summary())
    else:
        click.echo(f"days={n} stale={len(rows)} never={found.never}")


@fleet.command("conflicts")
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 100000), help="Rows shown.")
@click.pass_context
def conflicts_cmd(ctx: click.Context, as_json: bool, limit: int) -> None:
    """The same public key, or overlapping allowed IPs, on two peers (one interface, host or fleet)."""
    rows = _ask(ctx, "conflicts", limit)
    _show(rows, CONFLICT_COLUMNS, as_json, "no conflicts")
    if len(rows) >= limit:
        click.echo(f"fleet conflicts: first {limit} rows shown (--limit)", err=True)


@fleet.command("top")
@click.option("--since", default="24h", show_default=True, help="Duration back (30m, 24h, 7d) or ISO time.")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 10000), help="Peers shown.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def top_cmd(ctx: click.Context, since: str, limit: int, as_json: bool) -> None:
    """Top talkers: the peers that moved the most bytes since --since, from peer_traffic."""
    from wgsyncd import fleet as q

    when = _checked(lambda: q.parse_since(since))
    rows = _ask(ctx, "top", when, limit)
    _show(rows, TOP_COLUMNS, as_json, f"no traffic since {when.isoformat(timespec='seconds')}")


# ---------------------------------------------------------------- plumbing


def _ask(ctx: click.Context, question: str, *args: Any) -> Any:
    """One question of fleet.py (by name) on the configured database."""
    from wgsyncd import fleet as q

    with common.database(common.load(ctx)) as conn:  # no migration: a reader's connection
        return getattr(q, question)(conn, *args)


def _checked(parse: Callable[[], Any]) -> Any:
    """Run an argument check; a bad argument is one line on stderr and exit 2, before any connect."""
    from wgsyncd.fleet import FleetInputError

    try:
        return parse()
    except FleetInputError as exc:
        common.fail(f"fleet: {exc}", 2)


def _on_terminal() -> bool:
    """A person reading (tables); a pipe keeps key=value lines."""
    return sys.stdout.isatty()


def _show(rows: list[dict[str, Any]], columns: tuple[str, ...], as_json: bool, empty: str | None) -> None:
    """JSON, a table on a terminal, or key=value lines; ``empty`` when there is no row."""
    if as_json:
        common.emit([render.plain(r) for r in rows])
        return
    if not rows:
        if empty:
            click.echo(empty)
        return
    shown = [{k: _text(v) for k, v in render.plain(r).items()} for r in rows]
    if _on_terminal():
        click.echo(render.table(shown, columns))
        return
    for r in shown:
        click.echo(" ".join(f"{k}={_quoted(v)}" for k, v in r.items()))


def _text(value: Any) -> Any:
    """A cell safe for a terminal: text escaped, lists joined by commas, numbers kept."""
    if isinstance(value, list):
        value = ",".join("" if v is None else str(v) for v in value)
    if isinstance(value, str):
        return validate.shown(value, None)
    return value


def _quoted(value: Any) -> str:
    """A key=value value: empty for none, JSON-quoted when it holds a blank, quote or '='."""
    if value is None:
        return ""
    text = str(value)
    return json.dumps(text) if any(c in text for c in ' \t"=\\') or text == "" else text
