"""`wgsyncd fleet ...` as an operator runs it: a table on a terminal, key=value piped, JSON.

The real command in a subprocess (a pty for the terminal case), configured with the
reader role's DSN, against the three-host world of tests/beds/fleet_world.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.beds.fleet_world import HOSTILE_NAME, World, key
from tests.test_cli_terminal import run_on_terminal, run_piped
from tests.test_daemon import write_config

pytestmark = pytest.mark.postgres

_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def pairs(line: str) -> dict[str, Any]:
    """One key=value line back into a dict (quoted values are JSON strings)."""
    return {k: json.loads(v) if v.startswith('"') else v for k, v in _PAIR.findall(line)}


@pytest.fixture
def reader_config(world: World, tmp_path: Path) -> str:
    """A wgsyncd.toml whose DSN is the reader role's (a Grafana or operator login)."""
    cfg = tmp_path / "wgsyncd.toml"
    write_config(cfg, world.fleet.dsn(world.fleet.reader), "operator-laptop", database__auto_migrate="false")
    return str(cfg)


def terminal_lines(shown: str) -> list[str]:
    """What a person sees, one entry per non-empty line."""
    return [line for line in shown.replace("\r\n", "\n").splitlines() if line.strip()]


def test_hosts_table_on_a_terminal_key_value_piped_and_json(world: World, reader_config: str) -> None:
    f = world.fleet
    code, shown = run_on_terminal("--config", reader_config, "fleet", "hosts")
    lines = terminal_lines(shown)
    assert code == 0, shown
    assert lines[0].split()[:4] == ["HOST_ID", "HOSTNAME", "STATE", "LAST_OK_AT"]
    assert len(lines) == 4 and lines[1].startswith(world.host_c)  # stopped first
    state_col = lines[0].index("STATE")
    assert [line[state_col:].split()[0] for line in lines[1:]] == ["stopped", "ok", "ok"]  # aligned

    piped = run_piped("--config", reader_config, "fleet", "hosts")
    rows = [pairs(line) for line in piped.stdout.splitlines()]
    assert piped.returncode == 0 and "HOST_ID" not in piped.stdout
    assert [(r["host_id"], r["state"]) for r in rows] == [
        (world.host_c, "stopped"),
        (f.host_a, "ok"),
        (f.host_b, "ok"),
    ]
    assert rows[0]["last_message"] == "database: connect failed" and rows[0]["interval_s"] == "60"

    as_json = json.loads(run_piped("--config", reader_config, "fleet", "hosts", "--json").stdout)
    assert [(r["host_id"], r["state"], r["interval_s"]) for r in as_json] == [
        (world.host_c, "stopped", 60),
        (f.host_a, "ok", 600),
        (f.host_b, "ok", 300),
    ]


def test_a_hostile_peer_name_cannot_drive_the_terminal_or_forge_a_line(
    world: World, reader_config: str
) -> None:
    code, shown = run_on_terminal("--config", reader_config, "fleet", "peers")
    assert code == 0, shown
    assert "\x1b" not in shown and "\x07" not in shown  # escapes shown as text, never sent
    assert "x\\x1b]0;pwned\\x07\\x1b[31m\\nhost_id=forged" in shown
    assert len(terminal_lines(shown)) == 1 + 13

    piped = run_piped("--config", reader_config, "fleet", "peers")
    lines = piped.stdout.splitlines()
    assert len(lines) == 13 and not any(line.startswith("host_id=forged") for line in lines)
    hostile = [pairs(line) for line in lines if key("hostile") in line]
    assert hostile[0]["name"] == "x\\x1b]0;pwned\\x07\\x1b[31m\\nhost_id=forged"
    # JSON keeps the real value (escaped by JSON itself): a script gets what the host stored
    as_json = json.loads(run_piped("--config", reader_config, "fleet", "peers", "--json").stdout)
    assert HOSTILE_NAME in [p["name"] for p in as_json]


def test_find_prints_where_a_key_lives_and_exits_3_when_nowhere(world: World, reader_config: str) -> None:
    piped = run_piped("--config", reader_config, "fleet", "find", key("phone"))
    rows = [pairs(line) for line in piped.stdout.splitlines()]
    assert piped.returncode == 0
    assert [(r["host_id"], r["interface"], r["name"]) for r in rows] == [
        (world.fleet.host_a, "wg0", "phone"),
        (world.fleet.host_b, "wg0", "phone-b"),
    ]
    assert rows[0]["sources"] in ("kernel,conf", "conf,kernel") and rows[0]["addresses"] == "10.1.0.3/32"
    missing = run_piped("--config", reader_config, "fleet", "find", key("nobody"), "--json")
    assert (missing.returncode, json.loads(missing.stdout)) == (3, [])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("find", "not-a-key"), "wgsyncd: fleet: KEY: not a base64 WireGuard key (44 characters)"),
        (("top", "--since", "yesterday"), "wgsyncd: fleet: --since: 'yesterday' is neither a duration"),
        (
            ("top", "--since", "2999-01-01"),
            "wgsyncd: fleet: --since: 2999-01-01T00:00:00+00:00 is in the future",
        ),
        (
            ("stale", "--days", "-3"),
            "wgsyncd: fleet: --days: '-3' is not a whole number of days (0 to 36500)",
        ),
        (("stale", "--days", "\x1b[2J"), "wgsyncd: fleet: --days: '\\x1b[2J' is not a whole number"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_connecting(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    cfg = tmp_path / "wgsyncd.toml"  # a database that is not there: the argument is refused first
    write_config(cfg, f"host={tmp_path}/nosocket dbname=none user=none", "operator-laptop")
    out = run_piped("--config", str(cfg), "fleet", *args)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(message), out.stderr
    assert "\x1b" not in out.stderr


def test_stale_counts_never_handshaked_apart_in_every_format(world: World, reader_config: str) -> None:
    code, shown = run_on_terminal("--config", reader_config, "fleet", "stale", "--days", "7")
    lines = terminal_lines(shown)
    assert code == 0 and lines[0].split()[:5] == ["HOST_ID", "INTERFACE", "NAME", "PUBLIC_KEY", "HANDSHAKE"]
    assert lines[-1] == "3 peers without a handshake for 7 days (2 never had one, 1 went quiet)"
    piped = run_piped("--config", reader_config, "fleet", "stale", "--days", "2").stdout.splitlines()
    assert [pairs(line).get("name") for line in piped[:-1]] == ["fresh", "phone-b", "sitenet", "laptop"]
    assert pairs(piped[0])["handshake"] == "never" and piped[-1] == "days=2 stale=4 never=2"
    as_json = json.loads(run_piped("--config", reader_config, "fleet", "stale", "--json").stdout)
    assert (as_json["days"], as_json["stale"], as_json["never"], len(as_json["peers"])) == (7, 3, 2, 3)


def test_conflicts_and_top_talkers(world: World, reader_config: str) -> None:
    conflicts = json.loads(run_piped("--config", reader_config, "fleet", "conflicts", "--json").stdout)
    assert sorted((c["kind"], c["scope"], c["value_a"]) for c in conflicts) == [
        ("allowed_ip", "fleet", "10.30.0.9/32"),
        ("allowed_ip", "fleet", "10.9.0.7/32"),
        ("allowed_ip", "interface", "10.2.0.2/32"),
        ("public_key", "fleet", key("phone")),
        ("public_key", "host", key("alice")),
    ]
    code, shown = run_on_terminal("--config", reader_config, "fleet", "conflicts")
    assert code == 0 and terminal_lines(shown)[0].split()[:3] == ["KIND", "SCOPE", "HOST_A"]
    top = run_piped("--config", reader_config, "fleet", "top", "--since", "7d", "--limit", "2")
    assert [(pairs(line)["name"], pairs(line)["total_bytes"]) for line in top.stdout.splitlines()] == [
        ("alice", "54000"),
        ("laptop", "16000"),
    ]
