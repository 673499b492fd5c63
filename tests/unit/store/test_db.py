"""store.db: the transport rule for a remote database (verified TLS), and TLS files from credentials."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from wgsyncd import config
from wgsyncd.config import DatabaseConfig
from wgsyncd.store.db import StoreError, check_transport, transport_problem


@pytest.mark.parametrize(
    ("dsn", "env", "refused"),
    [
        ("host=db.example.org dbname=w", {}, "TCP host db.example.org"),
        ("host=192.0.2.10 sslmode=require", {}, "sslmode=require to TCP host 192.0.2.10"),
        ("postgresql://w@db.example.org/w?sslmode=verify-ca", {}, None),
        ("host=db.example.org sslmode=verify-full", {}, None),
        ("host=db.example.org", {"PGSSLMODE": "verify-full"}, None),
        ("dbname=w", {"PGHOST": "10.1.2.3"}, "TCP host 10.1.2.3"),
        ("host=/run/postgresql dbname=w", {}, None),
        ("host=127.0.0.1 sslmode=disable", {}, None),
        ("host=::1", {}, None),
        ("host=localhost", {}, None),
        ("host=/run/postgresql,db2.example.org sslmode=prefer", {}, "TCP host db2.example.org"),
        ("host=localhost hostaddr=198.51.100.7", {}, "TCP host 198.51.100.7"),
        ("dbname=w", {}, None),
    ],
)
def test_remote_tcp_needs_a_verified_certificate(dsn: str, env: dict[str, str], refused: str | None) -> None:
    problem = transport_problem(DatabaseConfig(dsn=dsn), env)
    if refused is None:
        assert problem is None
    else:
        assert problem is not None and refused in problem
        assert "database.allow_insecure_transport" in problem and "verify-full" in problem


def test_insecure_transport_only_when_allowed_and_then_warned(caplog, monkeypatch) -> None:
    monkeypatch.delenv("PGSSLMODE", raising=False)
    monkeypatch.delenv("PGHOST", raising=False)
    with pytest.raises(StoreError, match=r"sslmode=prefer to TCP host 192\.0\.2\.10"):
        check_transport(DatabaseConfig(dsn="host=192.0.2.10 password=hunter2"))
    with caplog.at_level(logging.WARNING, logger="wgsyncd.store"):
        check_transport(DatabaseConfig(dsn="host=192.0.2.10 password=hunter2", allow_insecure_transport=True))
    assert "192.0.2.10" in caplog.text and "allow_insecure_transport" in caplog.text
    assert "hunter2" not in caplog.text


def test_tls_files_come_from_systemd_credentials(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    for name in ("db-sslcert", "db-sslkey", "db-sslrootcert"):
        (creds / name).write_text("x")
    (tmp_path / "c.toml").write_text('host_id = "h"\n[database]\nsslrootcert = "/etc/ca.crt"\n')
    cfg = config.load(str(tmp_path / "c.toml"), environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.database.sslcert == str(creds / "db-sslcert")
    assert cfg.database.sslkey == str(creds / "db-sslkey")
    assert cfg.database.sslrootcert == "/etc/ca.crt"  # the file's setting wins
