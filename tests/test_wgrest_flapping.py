"""wgrest going away and coming back (issue 16 item 7), through `wgsyncd sync` into PostgreSQL.

A wgrest that answered once and now refuses is an error (a partial cycle), not "not
installed", even for a new process (the state dir remembers it); and a source missing
for a cycle never rewrites rows: flapping for N cycles makes no new row versions.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from tests.beds.host import Host, peers_by_key
from wgsyncd import store
from wgsyncd.sources import kernel as kernel_source

pytestmark = pytest.mark.postgres


def versions(host: Host) -> dict[object, int]:
    """Every config row's version: peers by (interface, key), interfaces by name."""
    out: dict[object, int] = {k: r.version for k, r in peers_by_key(host.dsn, host.host_id).items()}
    with psycopg.connect(host.dsn) as conn:
        out.update({i.name: i.version for i in store.load_interfaces(conn, host.host_id)})
    return out


def optional_config(host: Host) -> Path:
    """The shipped default (optional = true); returns the host's own state dir (Host sets it)."""
    host.write_config()
    host.config.write_text(host.config.read_text().replace("optional = false", "optional = true"))
    host.state_dir.mkdir(parents=True, exist_ok=True)
    return host.state_dir


@pytest.fixture(params=["v1", "v2"])
def flapping(request, tmp_path, wg_bed, pg_cluster, make_wgrest):
    host = Host(tmp_path, wg_bed, pg_cluster.create_database(), "host-flap")
    name = host.add_interface(20)
    wgrest = make_wgrest(request.param)
    wgrest.load_state(kernel_source.parse_wg_dump(host.ifaces[name].dump(), name).values())
    host.wgrest_url = wgrest.url
    state = optional_config(host)
    return host, wgrest, state


def test_wgrest_flapping_is_an_error_and_makes_no_new_row_versions(flapping):
    host, wgrest, state = flapping
    host.wgsyncd("sync")
    rows = peers_by_key(host.dsn, host.host_id)
    assert len(rows) == 20 and all(set(r.sources) == {"kernel", "conf", "wgrest"} for r in rows.values())
    before = versions(host)
    assert wgrest.url in json.loads((state / "wgrest-seen.json").read_text())

    for _ in range(3):
        wgrest.stop()  # refused from now on
        gone = host.wgsyncd("sync", check=False)
        assert gone.returncode == 4, gone.stdout + gone.stderr  # partial, not "not installed"
        assert "connection refused" in gone.stderr and "it answered before" in gone.stderr
        assert versions(host) == before
        wgrest.start(port=wgrest.port)  # back at the same URL
        host.wgsyncd("sync")
        assert versions(host) == before

    rows = peers_by_key(host.dsn, host.host_id)
    assert all(set(r.sources) == {"kernel", "conf", "wgrest"} for r in rows.values())
    with psycopg.connect(host.dsn) as conn:
        statuses = [s.status for s in store.status(conn, host.host_id, limit=10)]
    assert statuses[:6] == ["ok", "partial"] * 3


def test_a_wgrest_never_seen_is_not_installed(flapping, tmp_path):
    host, wgrest, state = flapping
    wgrest.stop()  # it never answered this state dir
    out = host.wgsyncd("sync")
    assert out.returncode == 0 and "refused" not in out.stderr
    assert not (state / "wgrest-seen.json").exists()
    rows = peers_by_key(host.dsn, host.host_id)
    assert len(rows) == 20 and all(set(r.sources) == {"kernel", "conf"} for r in rows.values())


@pytest.mark.parametrize("fault", ["huge_body", "endless_pages", "drip"])
def test_a_hostile_wgrest_fails_the_source_not_the_host(flapping, fault):
    """A body that never ends, pages that never end, a drip: one error line, partial cycle,
    and the kernel and conf rows still land."""
    host, wgrest, _state = flapping
    wgrest.fault = fault
    caps = "optional = true\nmax_answer_mib = 1\nmax_read_mib = 4"
    host.config.write_text(host.config.read_text().replace("optional = true", caps))
    proc = host.wgsyncd("sync", check=False)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    want = {"huge_body": "wgrest.max_answer_mib", "endless_pages": "wgrest.max_read_mib", "drip": "timeout"}
    assert want[fault] in proc.stderr and "Traceback" not in proc.stderr
    rows = peers_by_key(host.dsn, host.host_id)
    assert len(rows) == 20 and all(set(r.sources) == {"kernel", "conf"} for r in rows.values())
    with psycopg.connect(host.dsn) as conn:
        assert store.status(conn, host.host_id, limit=1)[0].status == "partial"


def test_flapping_keeps_values_only_wgrest_has(tmp_path, wg_bed, pg_cluster, make_wgrest):
    """wgrest v2 rewrites the conf from `wg showconf` (no Address, DNS, hooks), so those come
    from wgrest alone; while it is away the conf's empty lists are not news (no new version)."""
    host = Host(tmp_path, wg_bed, pg_cluster.create_database(), "host-flap-v2")
    name = host.add_interface(5)
    conf = host.conf_dir / f"{name}.conf"
    kept = [ln for ln in conf.read_text().splitlines() if not ln.startswith(("Address", "DNS", "PostUp"))]
    conf.write_text("\n".join(kept) + "\n")
    wgrest = make_wgrest("v2")
    wgrest.load_state(kernel_source.parse_wg_dump(host.ifaces[name].dump(), name).values())
    dev = wgrest.devices[name]
    dev.addresses, dev.dns, dev.post_up = ["10.99.0.1/24"], ["192.0.2.53"], ["echo up"]
    host.wgrest_url = wgrest.url
    optional_config(host)
    host.wgsyncd("sync")
    with psycopg.connect(host.dsn) as conn:
        (row,) = store.load_interfaces(conn, host.host_id)
    assert (row.addresses, row.dns, row.post_up) == (["10.99.0.1/24"], ["192.0.2.53"], ["echo up"])
    before = versions(host)
    for _ in range(2):
        wgrest.stop()
        assert host.wgsyncd("sync", check=False).returncode == 4
        now = versions(host)
        assert {k: (v, now[k]) for k, v in before.items() if now[k] != v} == {}
        wgrest.start(port=wgrest.port)
        host.wgsyncd("sync")
        assert versions(host) == before
