"""A remote database over verified TLS: PostgreSQL with a certificate from a CA made here.

One host role authenticates with a client certificate (pg_hba ``cert``), another
with a SCRAM password over TLS; both connect with sslmode=verify-full over TCP to
``localhost`` (the certificate's name). "Not loopback" is the rule that makes TLS
mandatory, so the refusal of weaker modes is tested with a DSN to a TEST-NET address
(tests/unit/store/test_db.py and the CLI test below): the refusal happens
before any connection, so no such host needs to exist.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from tests.beds import unavailable
from tests.beds.postgres import PgCluster, binaries_missing, make_ca, synthetic_state
from wgsyncd import config, store
from wgsyncd.cli import main
from wgsyncd.config import DatabaseConfig
from wgsyncd.state import Secret
from wgsyncd.store import roles

pytestmark = pytest.mark.postgres

CERT_ROLE = "wgs_tls_cert"
PW_ROLE = "wgs_tls_pw"
PASSWORD = "s3cret-over-tls"


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[tuple[PgCluster, str]]:
    """A TLS cluster: cert auth for CERT_ROLE, SCRAM for PW_ROLE, TCP only over TLS."""
    reason = binaries_missing() or (None if shutil.which("openssl") else "openssl missing")
    if reason:
        unavailable("PostgreSQL with TLS", reason)
    base = tempfile.mkdtemp(prefix="wgs-pgtls-", dir="/tmp")
    hba = (
        f"hostssl all {CERT_ROLE} 127.0.0.1/32 cert\n"
        f"hostssl all {PW_ROLE} 127.0.0.1/32 scram-sha-256\n"
        "hostnossl all all 127.0.0.1/32 reject\n"
    )
    cluster = PgCluster.start(base, tcp=True, tls=True, hba=hba)
    try:
        dsn, _owner = cluster.create_owned_database()
        with psycopg.connect(dsn) as conn:
            store.migrate(conn)
            roles.add_host(conn, "tls-host-a", CERT_ROLE)
            roles.add_host(conn, "tls-host-b", PW_ROLE, PASSWORD)
        yield cluster, psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    finally:
        cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


def tcp_dsn(cluster: PgCluster, dbname: str, user: str) -> str:
    """verify-full over TCP to the name in the server's certificate."""
    return (
        f"host=localhost hostaddr=127.0.0.1 port={cluster.port} dbname={dbname} user={user} "
        "sslmode=verify-full"
    )


def cycle(conn: psycopg.Connection, host_id: str) -> store.WriteReport:
    """Schema check and one write, as `wgsyncd sync` does for a host."""
    store.prepare(conn, auto_migrate=False)
    state = synthetic_state(host_id, interfaces=1, peers=5)
    return store.write_cycle(
        conn, state, sync_id=uuid.uuid4(), started_at=datetime.now(UTC), agent_version="t"
    )


def on_tls(conn: psycopg.Connection) -> tuple[bool, str]:
    """(ssl, version) of this session, from the server's view."""
    with conn.transaction():
        row = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row is not None
    return row[0], row[1]


def test_host_with_client_certificate_from_credentials_syncs_over_verify_full(tls_cluster, tmp_path) -> None:
    cluster, dbname = tls_cluster
    assert cluster.tls is not None
    crt, key = cluster.tls.client(CERT_ROLE)
    creds = tmp_path / "creds"  # what systemd's LoadCredential= gives the service
    creds.mkdir()
    for name, src in (("db-sslcert", crt), ("db-sslkey", key), ("db-sslrootcert", cluster.tls.ca)):
        (creds / name).write_bytes(src.read_bytes())
        (creds / name).chmod(0o400)
    (tmp_path / "w.toml").write_text(
        f'host_id = "tls-host-a"\n[database]\ndsn = "{tcp_dsn(cluster, dbname, CERT_ROLE)}"\n'
    )
    cfg = config.load(str(tmp_path / "w.toml"), environ={"CREDENTIALS_DIRECTORY": str(creds)})
    with store.connect(cfg.database) as conn:
        assert on_tls(conn)[0] is True
        assert cycle(conn, "tls-host-a").tables["peers"].inserted == 5


def test_host_with_password_over_verify_full(tls_cluster) -> None:
    cluster, dbname = tls_cluster
    assert cluster.tls is not None
    cfg = DatabaseConfig(
        dsn=tcp_dsn(cluster, dbname, PW_ROLE), password=Secret(PASSWORD), sslrootcert=str(cluster.tls.ca)
    )
    with store.connect(cfg) as conn:
        assert on_tls(conn)[0] is True
        cycle(conn, "tls-host-b")
    bad = DatabaseConfig(dsn=cfg.dsn, password=Secret("wrong-" + PASSWORD), sslrootcert=str(cluster.tls.ca))
    with pytest.raises(store.StoreError) as err:
        store.connect(bad)
    assert "password authentication failed" in str(err.value) and PASSWORD not in str(err.value)


def test_a_server_certificate_from_another_ca_is_refused(tls_cluster, tmp_path) -> None:
    cluster, dbname = tls_cluster
    other_ca, _key = make_ca(tmp_path / "other", "someone-else")
    cfg = DatabaseConfig(
        dsn=tcp_dsn(cluster, dbname, PW_ROLE), password=Secret(PASSWORD), sslrootcert=str(other_ca)
    )
    with pytest.raises(store.StoreError, match="certificate verify failed") as err:
        store.connect(cfg)
    assert PASSWORD not in str(err.value)


def test_cli_refuses_unverified_remote_transport_naming_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    for command in (["check-config"], ["sync"]):
        path.write_text(
            'host_id = "h"\n[database]\ndsn = "host=192.0.2.10 dbname=w user=u sslmode=require"\n'
        )
        res = CliRunner().invoke(main, ["--config", str(path), *command])
        assert res.exit_code == 1, res.output
        assert "sslmode=require to TCP host 192.0.2.10" in res.output
        assert "database.allow_insecure_transport" in res.output
    from wgsyncd import daemon

    with pytest.raises(config.ConfigError, match=r"sslmode=require to TCP host 192\.0\.2\.10"):
        daemon.load_config(str(path))
    path.write_text(
        'host_id = "h"\n[database]\ndsn = "host=192.0.2.10 dbname=w sslmode=require"\n'
        "allow_insecure_transport = true\n"
    )
    res = CliRunner().invoke(main, ["--config", str(path), "check-config"])
    assert res.exit_code == 0, res.output
