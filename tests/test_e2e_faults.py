"""End to end with bad input: each fault gives one clear line, the rest still syncs, nothing wrong lands.

Also the secret audit: no private key, preshared key, token or password in any
output line or any database column after a full debug-level sync.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.beds.host import Host, peers_by_key
from wgsyncd import store

pytestmark = pytest.mark.postgres


@pytest.fixture
def two_ifaces(tmp_path, wg_bed, pg_cluster):
    host = Host(tmp_path, wg_bed, pg_cluster.create_database(), "host-faults")
    good = host.add_interface(20)
    bad = host.add_interface(10)
    return host, good, bad


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower() or "ERROR" in line]


def last_status(host: Host) -> store.StatusRow:
    with psycopg.connect(host.dsn) as conn:
        return store.status(conn, host.host_id, limit=1)[0]


def test_malformed_conf_names_file_line_field_and_rest_syncs(two_ifaces):
    host, good, bad = two_ifaces
    conf = host.conf_dir / f"{bad}.conf"
    text = conf.read_text()
    # a peer key one byte short: wg would refuse this file too
    lines = text.splitlines()
    idx = next(i for i, line in enumerate(lines) if line.startswith("PublicKey"))
    lines[idx] = "PublicKey = " + "A" * 40 + "AA=="
    conf.write_text("\n".join(lines) + "\n")
    host.write_config()

    proc = host.wgsyncd("sync", check=False)
    assert proc.returncode == 4, proc.stdout + proc.stderr  # partial
    errs = error_lines(proc.stderr)
    assert len(errs) == 1, proc.stderr
    assert f"{conf}:{idx + 1}" in errs[0] and "PublicKey" in errs[0]
    assert "Traceback" not in proc.stderr

    rows = peers_by_key(host.dsn, host.host_id)
    assert len([k for k in rows if k[0] == good]) == 20
    bad_rows = [r for k, r in rows.items() if k[0] == bad]
    assert len(bad_rows) == 10  # the kernel still saw them
    assert all(r.name is None and r.sources == ["kernel"] for r in bad_rows)  # nothing from the bad file
    st = last_status(host)
    assert st.status == "partial" and any(str(conf) in e for e in st.errors)


@pytest.mark.parametrize("fault", ["500", "garbage", "hang"])
def test_wgrest_fault_is_one_line_and_the_rest_syncs(two_ifaces, make_wgrest, fault):
    host, _, _ = two_ifaces
    wgrest = make_wgrest("v2", token="tok-" + "z" * 20)
    wgrest.fault = fault
    host.wgrest_url = wgrest.url
    host.write_config(f'token = "{wgrest.token}"\n')

    proc = host.wgsyncd("sync", check=False)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    errs = error_lines(proc.stderr)
    assert len(errs) == 1, proc.stderr
    assert wgrest.url in errs[0]
    assert wgrest.token not in proc.stderr + proc.stdout
    rows = peers_by_key(host.dsn, host.host_id)
    assert len(rows) == 30 and all("wgrest" not in r.sources for r in rows.values())
    assert last_status(host).status == "partial"


def test_unreachable_database_is_one_line_exit_1(tmp_path, wg_bed):
    host = Host(tmp_path, wg_bed, f"host={tmp_path} port=1 dbname=nope user=wgsyncd", "host-nodb")
    host.add_interface(2)
    (tmp_path / "pw").write_text("hunter2-db-password")
    host.write_config()
    host.config.write_text(
        host.config.read_text().replace(
            "connect_timeout = 5.0", f'connect_timeout = 2.0\npassword_file = "{tmp_path / "pw"}"'
        )
    )
    proc = host.wgsyncd("sync", check=False)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert str(tmp_path) in lines[0] and "nope" in lines[0]
    assert "hunter2" not in proc.stderr and "Traceback" not in proc.stderr


def test_no_secret_in_logs_output_or_database(tmp_path, wg_bed, pg_cluster, make_wgrest):
    host = Host(tmp_path, wg_bed, pg_cluster.create_database(), "host-secrets")
    name = host.add_interface(40)
    wgrest = make_wgrest("v2", token="tok-secret-" + "q" * 20)
    from wgsyncd.sources import kernel as kernel_source

    state = kernel_source.parse_wg_dump(host.ifaces[name].dump(), name)
    wgrest.load_state(state.values())
    (tmp_path / "pw").write_text("db-password-Zk9")
    host.wgrest_url = wgrest.url
    host.write_config(f'token = "{wgrest.token}"\n')
    host.config.write_text(
        host.config.read_text().replace("[database]", f'[database]\npassword_file = "{tmp_path / "pw"}"')
    )

    secrets = [wgrest.token, "db-password-Zk9", host.keys[name]]
    secrets += [p.preshared_key for p in host.specs[name] if p.preshared_key]
    assert len(secrets) > 10
    outputs = []
    for args in (("--log-level", "debug", "sync"), ("--log-level", "debug", "collect", "--json"), ("drift",)):
        proc = host.wgsyncd(*args, check=False)
        assert proc.returncode in (0, 3), proc.stderr
        outputs.append(proc.stdout + proc.stderr)
    blob = "\n".join(outputs)
    assert "DEBUG" in blob or "debug" in blob  # debug logging really was on
    leaked = [s[:6] for s in secrets if s in blob]
    assert not leaked, f"secrets in output (first chars): {leaked}"

    import base64

    raw = [base64.b64decode(s) for s in secrets[2:]]
    with psycopg.connect(host.dsn) as conn:
        cols = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
            " AND data_type IN ('text', 'character varying', 'bytea', 'jsonb', 'ARRAY', 'json')"
        ).fetchall()
        assert len(cols) > 20
        for table, col in cols:
            for (value,) in conn.execute(f'SELECT "{col}"::text FROM "{table}"'):
                if value is None:
                    continue
                assert not any(s in value for s in secrets), f"{table}.{col} holds a secret"
            for (value,) in conn.execute(f'SELECT "{col}"::text::bytea FROM "{table}"'):
                if value is not None:
                    assert not any(r in bytes(value) for r in raw), f"{table}.{col} holds raw key bytes"
