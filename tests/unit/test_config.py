"""config: file, environment, secrets from files and systemd credentials, errors naming keys."""

from __future__ import annotations

import pytest

from wgsyncd import config
from wgsyncd.config import ConfigError


def write(tmp_path, text: str) -> str:
    p = tmp_path / "wgsyncd.toml"
    p.write_text(text)
    return str(p)


def test_defaults_without_file_use_machine_id(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "DEFAULT_PATH", str(tmp_path / "absent.toml"))
    cfg = config.load(None, environ={})
    assert cfg.host_id and cfg.daemon.interval == 60.0
    assert cfg.wgrest.url == "http://127.0.0.1:51822"


def test_file_then_env_override(tmp_path):
    path = write(
        tmp_path, 'host_id = "vpn-1"\n[database]\ndsn = "host=/tmp dbname=a"\n[daemon]\ninterval = 30\n'
    )
    cfg = config.load(path, environ={"WGSYNCD_DAEMON_INTERVAL": "15", "WGSYNCD_INTERFACES": "wg0,wg1"})
    assert cfg.host_id == "vpn-1"
    assert cfg.database.dsn == "host=/tmp dbname=a"
    assert cfg.daemon.interval == 15.0
    assert cfg.interfaces == ("wg0", "wg1")


@pytest.mark.parametrize(
    ("text", "env", "needle"),
    [
        ("[database]\nnope = 1\n", {}, "database.nope: unknown key"),
        ("[daemon]\ninterval = -1\n", {}, "daemon.interval: must be greater than 0"),
        ('[kernel]\nbackend = "ebpf"\n', {}, "kernel.backend: must be one of"),
        ("[wgrest]\nper_page = 1.5\n", {}, "wgrest.per_page: expected a whole number"),
        ("[conf]\nenabled = 3\n", {}, "conf.enabled: expected true or false"),
        ("", {"WGSYNCD_DAEMON_INTERVAL": "soon"}, "daemon.interval: expected a number"),
        ("[database]\nstatement_timeout = 1e6\n", {}, "database.statement_timeout: must be at most 3600"),
        ("database = 1\n", {}, "database: expected a [database] table"),
        ("x = [\n", {}, "not valid TOML"),
        ("", {"WGSYNCD_NOPE": "1"}, "WGSYNCD_NOPE: unknown environment variable"),
    ],
)
def test_errors_name_the_key(tmp_path, text, env, needle):
    with pytest.raises(ConfigError) as exc:
        config.load(write(tmp_path, text), environ=env)
    assert needle in str(exc.value)


def test_secret_files_and_credentials_never_in_errors_or_repr(tmp_path):
    (tmp_path / "pw").write_text("s3cret-pw\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "wgrest-token").write_text("tok-123")
    path = write(tmp_path, f'[database]\ndsn = "host=/tmp"\npassword_file = "{tmp_path / "pw"}"\n')
    cfg = config.load(path, environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.database.password.reveal() == "s3cret-pw"
    assert cfg.wgrest.token.reveal() == "tok-123"
    assert "s3cret-pw" not in repr(cfg) and "tok-123" not in repr(cfg)


def test_missing_secret_file_names_key_and_path(tmp_path):
    path = write(tmp_path, '[wgrest]\ntoken_file = "/nonexistent/token"\n')
    with pytest.raises(ConfigError, match=r"wgrest.token_file: cannot read /nonexistent/token"):
        config.load(path, environ={})


def test_explicit_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        config.load(str(tmp_path / "absent.toml"), environ={})


def test_example_config_documents_every_key_and_loads():
    import dataclasses
    import tomllib
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "config" / "wgsyncd.toml"
    text = example.read_text()
    cfg = config.load(str(example), environ={})
    assert cfg.database.dsn
    # every key appears in the example, set or commented out
    uncommented = tomllib.loads(text)
    assert isinstance(uncommented, dict)
    for f in dataclasses.fields(config.Config):
        if f.name in config._DERIVED:
            continue
        sub = getattr(cfg, f.name)
        names = [g.name for g in dataclasses.fields(sub)] if dataclasses.is_dataclass(sub) else [f.name]
        for n in names:
            assert f"{n} =" in text or f"{n}=" in text, f"{f.name}.{n} not documented"


@pytest.mark.parametrize(
    ("text", "env", "needle"),
    [
        ("[database]\nhistory_days = nan\n", {}, "database.history_days: expected a finite number"),
        ("", {"WGSYNCD_DATABASE_HISTORY_DAYS": "inf"}, "database.history_days: expected a finite number"),
        ("[daemon]\ninterval = inf\n", {}, "daemon.interval: expected a finite number"),
        ("", {"WGSYNCD_DATABASE_STATEMENT_TIMEOUT": "NaN"}, "database.statement_timeout: expected a finite"),
        ("[database]\nhistory_days = 1e6\n", {}, "database.history_days: must be at most 36500"),
        (
            "[database]\ntraffic_detail_hours = -1\n",
            {},
            "database.traffic_detail_hours: must be 0 (never fold) to",
        ),
        ("", {"WGSYNCD_DATABASE_TRAFFIC_DETAIL_HOURS": "1e9"}, "database.traffic_detail_hours: must be 0"),
        ("[database]\ntraffic_detail_hours = nan\n", {}, "database.traffic_detail_hours: expected a finite"),
    ],
)
def test_non_finite_and_out_of_range_numbers_name_the_key(tmp_path, text, env, needle):
    """nan/inf (TOML literals or env text) and a retention past year 1 used to pass validation.

    Then every cycle crashed after its commit: timedelta(days=nan) is a ValueError and
    now - timedelta(days=1e6) an OverflowError inside the retention step, and an
    infinite interval made select() raise OverflowError in the daemon's sleep.
    """
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, 'host_id = "h"\n' + text), environ=env)
    assert needle in str(err.value)
