"""Host identity derived from the machine-id, and the transport rule for a remote database."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from wgsyncd import config
from wgsyncd.config import DatabaseConfig
from wgsyncd.store.db import StoreError, check_transport, transport_problem

MID = "0123456789abcdef0123456789abcdef"


def test_app_specific_id_is_what_systemd_computes() -> None:
    """The default host_id is `systemd-id128 machine-id --app-specific=<wgsyncd's app id>`."""
    tool = shutil.which("systemd-id128")
    machine = config.machine_id()
    if tool is None or machine is None:
        pytest.skip("systemd-id128 or /etc/machine-id missing")
    want = subprocess.run(
        [tool, "machine-id", f"--app-specific={config.HOST_ID_APP_ID.hex}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert config.app_specific_id(machine, config.HOST_ID_APP_ID) == want
    assert config.default_host_id() == want != machine


def test_host_id_and_fingerprint_never_reveal_the_machine_id(tmp_path: Path, monkeypatch) -> None:
    mid = tmp_path / "machine-id"
    mid.write_text(MID + "\n")
    monkeypatch.setattr(config, "MACHINE_ID_PATHS", (str(mid),))
    host_id, fp = config.default_host_id(), config.machine_fingerprint()
    assert len(host_id) == 32 and host_id[12] == "4" and host_id[16] in "89ab"  # a v4 UUID, like systemd's
    assert MID not in (host_id, fp) and host_id != fp
    assert fp == config.app_specific_id(MID, config.FINGERPRINT_APP_ID)
    (tmp_path / "c.toml").write_text('[database]\ndsn = "host=/tmp"\n')
    cfg = config.load(str(tmp_path / "c.toml"), environ={})
    assert (cfg.host_id, cfg.machine_fp) == (host_id, fp)
    (tmp_path / "c.toml").write_text(f'host_id = "{MID}"\n')  # an upgraded host keeps its old id
    assert config.load(str(tmp_path / "c.toml"), environ={}).host_id == MID
    (tmp_path / "c.toml").write_text('machine_fp = "forged"\n')
    with pytest.raises(config.ConfigError, match="machine_fp: unknown key"):
        config.load(str(tmp_path / "c.toml"), environ={})


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
