"""contrib/grafana/wgsyncd.json: every panel's query runs against the real schema as the reader.

Grafana is not installed here; what it would send is: the panel's rawSql with the
template variables ($host, $days, ${key:sqlstring}, $__interval) and the PostgreSQL
data source's macros ($__timeFilter, $__timeGroupAlias) expanded the way Grafana's
PostgreSQL data source expands them. That SQL runs as a wgsyncd_reader member (the
login the README gives Grafana) on the three-host world of tests/beds/fleet_world.py,
and every panel has an expectation: a panel added without one fails the test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.beds.fleet_world import World, key

pytestmark = pytest.mark.postgres

DASHBOARD = Path(__file__).resolve().parents[1] / "contrib" / "grafana" / "wgsyncd.json"
INTERVAL_S = 300  # what Grafana would pick for $__interval on a 24 h range and a wide panel


def quoted(value: str) -> str:
    """Grafana's SQL string formatting of a variable value: single quotes, doubled inside."""
    return "'" + value.replace("'", "''") + "'"


def expand(query: str, variables: dict[str, str], start: datetime, end: datetime) -> str:
    """The SQL Grafana would send for ``query``: variables first, then the data source's macros."""
    for name, value in variables.items():
        query = query.replace(f"${{{name}}}", value).replace(f"${name}", value)
    query = query.replace("$__interval", f"'{INTERVAL_S}s'")
    query = re.sub(
        r"\$__timeGroupAlias\((\w+),\s*'(\d+)s'\)",
        lambda m: f'floor(extract(epoch from {m.group(1)})/{m.group(2)})*{m.group(2)} AS "time"',
        query,
    )
    query = re.sub(
        r"\$__timeFilter\((\w+)\)",
        lambda m: f"{m.group(1)} BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'",
        query,
    )
    assert "$" not in query, f"an unexpanded variable or macro: {query}"
    return query


def by_metric(rows: list[dict[str, Any]], value: str) -> dict[str, float]:
    """A long-format time series summed per metric (series name)."""
    out: dict[str, float] = {}
    for r in rows:
        out[r["metric"]] = out.get(r["metric"], 0) + float(r[value])
    return out


def expectations(w: World) -> dict[str, Callable[[list[dict[str, Any]]], Any]]:
    """Per panel title: a check of its rows against what the world holds."""
    a, b, c = w.fleet.host_a, w.fleet.host_b, w.host_c

    def check(cond: bool, rows: list[dict[str, Any]]) -> None:
        assert cond, rows

    return {
        "Hosts": lambda rows: check(rows == [{"hosts": 3}], rows),
        "Hosts that stopped syncing": lambda rows: check(rows == [{"stopped": 1}], rows),
        "Peers": lambda rows: check(rows == [{"peers": 13}], rows),
        "Conflicts": lambda rows: check(rows == [{"conflicts": 5}], rows),
        "Hosts and sync state": lambda rows: check(
            [(r["host_id"], r["state"]) for r in rows] == [(c, "stopped"), (a, "ok"), (b, "ok")], rows
        ),
        "Cycle results": lambda rows: check(by_metric(rows, "cycles") == {"ok": 6, "failed": 1}, rows),
        "Cycle duration per host": lambda rows: check(
            set(by_metric(rows, "seconds")) == {a, b, c} and all(r["time"] % INTERVAL_S == 0 for r in rows),
            rows,
        ),
        # B's laptop talked 3 days ago, outside the range; C's gw two hours ago, inside
        "Traffic per host": lambda rows: check(by_metric(rows, "bytes") == {a: 54_870, b: 204, c: 10}, rows),
        "Top talkers": lambda rows: check(
            [(r["name"], r["total_bytes"]) for r in rows[:2]] == [("alice", 54_000), ("phone", 700)]
            and "laptop" not in [r["name"] for r in rows],
            rows,
        ),
        "Peers without a handshake for $days days": lambda rows: check(
            [(r["name"], r["handshake"] == "never") for r in rows]
            == [("fresh", True), ("phone-b", True), ("sitenet", False)],
            rows,
        ),
        "Never handshaked": lambda rows: check(rows == [{"never": 2}], rows),
        "Conflicts: same public key or overlapping allowed IPs": lambda rows: check(
            sorted((r["kind"], r["scope"], r["value_a"]) for r in rows)
            == [
                ("allowed_ip", "fleet", "10.30.0.9/32"),
                ("allowed_ip", "fleet", "10.9.0.7/32"),
                ("allowed_ip", "interface", "10.2.0.2/32"),
                ("public_key", "fleet", key("phone")),
                ("public_key", "host", key("alice")),
            ],
            rows,
        ),
        "Where the key lives": lambda rows: check(
            [(r["host_id"], r["name"]) for r in rows] == [(a, "phone"), (b, "phone-b")], rows
        ),
    }


def test_the_dashboard_takes_its_data_source_as_an_input_and_every_query_is_raw_sql() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert [(i["name"], i["type"], i["pluginId"]) for i in dash["__inputs"]] == [
        ("DS", "datasource", "grafana-postgresql-datasource")
    ]
    assert dash["panels"] and len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "${DS}", p["title"]
        for t in p["targets"]:
            assert (t["datasource"]["uid"], t["rawQuery"], t["editorMode"]) == ("${DS}", True, "code"), p[
                "title"
            ]
            assert t["rawSql"].strip() and t["format"] in ("table", "time_series"), p["title"]
            if t["format"] == "time_series":
                assert 'AS "time"' in expand(
                    t["rawSql"], {"host": "'x'"}, datetime.now(UTC), datetime.now(UTC)
                )


def test_every_panel_query_answers_right_as_the_reader(world: World) -> None:
    dash = json.loads(DASHBOARD.read_text())
    end = world.now + timedelta(minutes=1)
    start = end - timedelta(hours=24)
    checks = expectations(world)
    ran = []
    with psycopg.connect(world.fleet.dsn(world.fleet.reader), autocommit=True, row_factory=dict_row) as c:
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        host_query = expand(variables["host"]["query"], {}, start, end)
        hosts = [r["host_id"] for r in c.execute(host_query).fetchall()]
        assert sorted(hosts) == sorted([world.fleet.host_a, world.fleet.host_b, world.host_c])
        values = {
            "host": ",".join(quoted(h) for h in hosts),  # "All" of a multi-value variable
            "days": variables["days"]["current"]["value"],  # titles only
            "days:sqlstring": quoted(variables["days"]["current"]["value"]),
            "key:sqlstring": quoted(key("phone")),
        }
        for p in dash["panels"]:
            for t in p["targets"]:
                rows = c.execute(expand(t["rawSql"], values, start, end)).fetchall()
                assert p["title"] in checks, f"panel {p['title']!r} has no expectation in this test"
                checks[p["title"]]([{k: _plain(v) for k, v in r.items()} for r in rows])
                ran.append(p["title"])
    assert sorted(ran) == sorted(checks)  # every expectation met a panel


def test_a_quote_in_the_key_box_stays_inside_the_string(world: World) -> None:
    """The key text box is typed by dashboard users: Grafana's sqlstring format keeps it a literal."""
    dash = json.loads(DASHBOARD.read_text())
    (panel,) = [p for p in dash["panels"] if p["title"] == "Where the key lives"]
    now = datetime.now(UTC)
    hostile = quoted("x' OR true OR public_key = '")
    with psycopg.connect(world.fleet.dsn(world.fleet.reader), autocommit=True) as c:
        sql = expand(panel["targets"][0]["rawSql"], {"key:sqlstring": hostile}, now, now)
        assert c.execute(sql).fetchall() == []


def _plain(v: Any) -> Any:
    """numeric -> int when whole (counts and sums), else float; everything else as is."""
    if hasattr(v, "as_integer_ratio") and not isinstance(v, int | bool):
        f = float(v)
        return int(f) if f.is_integer() else f
    return v


def test_the_days_variable_is_a_quoted_string_cast_to_int_and_takes_no_custom_value(world: World) -> None:
    """$days was substituted unquoted into make_interval(): a custom value was SQL. Now it is a
    string literal cast to int (anything else is an error, never SQL) and no custom value."""
    dash = json.loads(DASHBOARD.read_text())
    (days,) = [v for v in dash["templating"]["list"] if v["name"] == "days"]
    assert days["allowCustomValue"] is False
    (panel,) = [p for p in dash["panels"] if "make_interval" in p["targets"][0]["rawSql"]]
    assert "$days)" not in panel["targets"][0]["rawSql"]
    now = datetime.now(UTC)
    values = {"host": quoted(world.fleet.host_a), "days:sqlstring": quoted("7) OR true OR (1")}
    sql = expand(panel["targets"][0]["rawSql"], values, now, now)
    with (
        psycopg.connect(world.fleet.dsn(world.fleet.reader), autocommit=True) as c,
        pytest.raises(psycopg.errors.InvalidTextRepresentation),
    ):
        c.execute(sql)
