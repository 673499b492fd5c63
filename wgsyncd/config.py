"""Configuration: /etc/wgsyncd/wgsyncd.toml, then WGSYNCD_* environment, then secrets.

Validated in one place, with errors that name the key (``database.dsn: ...``), so
``wgsyncd check-config`` and every command fail the same clear way. Secrets (DB
password, wgrest token) may come from the file, from ``*_file`` keys, or from
systemd credentials ($CREDENTIALS_DIRECTORY/db-password, .../wgrest-token).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wgsyncd import coerce, hostid
from wgsyncd.state import Secret, parse_key

DEFAULT_PATH = "/etc/wgsyncd/wgsyncd.toml"
ENV_PREFIX = "WGSYNCD_"
CREDENTIAL_DB_PASSWORD = "db-password"
CREDENTIAL_WGREST_TOKEN = "wgrest-token"
# TLS files for the database connection, as systemd credential names (LoadCredential=)
CREDENTIAL_DB_TLS = {"sslcert": "db-sslcert", "sslkey": "db-sslkey", "sslrootcert": "db-sslrootcert"}
MAX_HISTORY_DAYS = 36500
MAX_TIMEOUT = 3600.0


class ConfigError(ValueError):
    """A bad configuration value; the message starts with the key's dotted name."""


@dataclass
class KernelConfig:
    """How to read the running interfaces."""

    enabled: bool = True
    # auto: netlink for kernel interfaces, the control socket for userspace ones
    backend: str = "auto"  # auto | netlink | uapi | wg
    socket_dir: str = "/run/wireguard"  # wireguard-go / boringtun control sockets
    wg_command: str = "wg"  # used by backend "wg" (`wg show all dump`)
    timeout: float = 10.0


@dataclass
class ConfConfig:
    """Where wg-quick conf files live."""

    enabled: bool = True
    directory: str = "/etc/wireguard"


@dataclass
class WgrestConfig:
    """wgrest's REST API (and v1's data dir)."""

    enabled: bool = True
    url: str = "http://127.0.0.1:51822"
    token: Secret | None = None
    token_file: str | None = None
    api_version: str = "auto"  # auto | v1 | v2
    timeout: float = 10.0
    # wgrest reads (and sorts) the whole device for every page it serves, so N peers
    # in pages of P cost it N/P full reads a cycle: one page up to 10,000 peers
    per_page: int = 10000
    data_dir: str | None = "/var/lib/wgrest"  # v1 only; <data_dir>/v1/*.conf
    # a wgrest that is not listening is "not installed here", not an error (until it answered once)
    optional: bool = True
    # memory bound (MiB): one answer, and all answers of one read together
    max_answer_mib: float = 16.0
    max_read_mib: float = 64.0


@dataclass
class DatabaseConfig:
    """The shared PostgreSQL."""

    dsn: str | None = None  # libpq conninfo or URI, without the password preferably
    password: Secret | None = None
    password_file: str | None = None
    connect_timeout: float = 10.0
    statement_timeout: float = 20.0  # seconds, applied per transaction (store/pooled.py)
    # apply pending schema migrations before the first sync; only the schema owner may,
    # so a host (its own role) leaves this false and the operator runs `wgsyncd db migrate`
    auto_migrate: bool = False
    # a TCP database host other than loopback needs sslmode=verify-full or verify-ca;
    # true accepts anything (a warning is logged on every connect)
    allow_insecure_transport: bool = False
    # client certificate, key and CA for TLS (else the DSN's or $CREDENTIALS_DIRECTORY's
    # db-sslcert, db-sslkey, db-sslrootcert)
    sslcert: str | None = None
    sslkey: str | None = None
    sslrootcert: str | None = None
    # traffic history and sync_status rows older than this are pruned (this host's
    # own rows, a bounded batch per cycle); 0 keeps them forever
    history_days: float = 90.0
    # traffic history past this age is folded into one row per peer per UTC hour (sums
    # between hours unchanged, ~60x fewer rows at a 60 s interval); 0 keeps every cycle's row
    traffic_detail_hours: float = 24.0


@dataclass
class DaemonConfig:
    """The loop of `wgsyncd run`."""

    interval: float = 60.0
    jitter: float = 0.1  # fraction of interval, random +-
    backoff_initial: float = 5.0
    backoff_max: float = 300.0
    # where the loop leaves last-cycle.json for `wgsyncd status --local` (healthchecks)
    state_dir: str = "/var/lib/wgsyncd"
    # the local spool of cycles the database could not take (wgsyncd/spool.py), in
    # state_dir; past either bound the oldest cycles are dropped with a warning. 0 MB: off
    spool_max_mb: float = 256.0
    spool_max_age: float = 604800.0  # seconds (7 days)


@dataclass
class MetricsConfig:
    """Prometheus metrics (wgsyncd/metrics.py)."""

    # node_exporter textfile: "auto" = /var/lib/prometheus/node-exporter/wgsyncd.prom when
    # that directory exists; a path; "" = no textfile (`wgsyncd metrics` still works)
    textfile: str | None = "auto"
    # per-peer series beyond this many peers are left out (wgsyncd_peer_series_dropped)
    max_peer_series: int = 1000


@dataclass
class PersistConfig:
    """Reboot safety (wgsyncd/persist.py): a local snapshot of the running peers."""

    enabled: bool = False
    directory: str = "/var/lib/wgsyncd/persist"


@dataclass
class Config:
    """Everything wgsyncd needs; build with :func:`load`."""

    host_id: str = ""
    hostname: str = ""
    # fnmatch globs; empty = every interface. Applied to every source.
    interfaces: tuple[str, ...] = ()
    exclude_interfaces: tuple[str, ...] = ()
    log_level: str = "info"
    # the operator's recovery public key (`wgsyncd keys init-recovery`): secrets are
    # sealed to it before they leave the host; unset = secrets are not stored at all
    recovery_public_key: str | None = None
    kernel: KernelConfig = field(default_factory=KernelConfig)
    conf: ConfConfig = field(default_factory=ConfConfig)
    wgrest: WgrestConfig = field(default_factory=WgrestConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    persist: PersistConfig = field(default_factory=PersistConfig)
    source_path: str | None = None  # the file it was read from
    # derived from the machine-id at load (never configured): refuses a clone that
    # shares this host_id (store: wgsyncd_begin_cycle); None without a machine-id
    machine_fp: str | None = None


_DERIVED = ("source_path", "machine_fp")


_SECTIONS = {
    "kernel": KernelConfig,
    "conf": ConfConfig,
    "wgrest": WgrestConfig,
    "database": DatabaseConfig,
    "daemon": DaemonConfig,
    "metrics": MetricsConfig,
    "persist": PersistConfig,
}
_CHOICES = {
    "kernel.backend": ("auto", "netlink", "uapi", "wg"),
    "wgrest.api_version": ("auto", "v1", "v2"),
    "log_level": ("debug", "info", "warning", "error"),
}


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """Turn a TOML or environment value into the field's type, or say which key is wrong."""
    try:
        return coerce.to_type(kind, value)
    except (TypeError, ValueError) as exc:
        # never echo the value: it may be a secret
        raise ConfigError(f"{key}: {exc}") from None


def _apply(obj: Any, values: dict[str, Any], prefix: str) -> None:
    """Set the dataclass fields of ``obj`` from ``values``, rejecting unknown keys."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name in _SECTIONS and not prefix:
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a [{name}] table")
            _apply(getattr(obj, name), value, f"{name}.")
            continue
        if name not in fields or name in _DERIVED:
            raise ConfigError(f"{key}: unknown key")
        setattr(obj, name, _coerce(key, value, coerce.field_types(type(obj))[name]))


def _env_values(environ: dict[str, str]) -> dict[str, Any]:
    """WGSYNCD_HOST_ID, WGSYNCD_DATABASE_DSN, ... as a nested dict like the TOML file."""
    out: dict[str, Any] = {}
    top = {f.name for f in dataclasses.fields(Config)} - set(_SECTIONS) - set(_DERIVED)
    for env_key, value in environ.items():
        if not env_key.startswith(ENV_PREFIX) or env_key == ENV_PREFIX + "CONFIG":
            continue
        rest = env_key[len(ENV_PREFIX) :].lower()
        section = next((s for s in _SECTIONS if rest.startswith(s + "_")), None)
        if section:
            out.setdefault(section, {})[rest[len(section) + 1 :]] = value
        elif rest in top:
            out[rest] = value
        else:
            raise ConfigError(f"{env_key}: unknown environment variable")
    return out


def _read_secret_file(key: str, path: str) -> Secret:
    """Read a password/token file; the error names the key and path, never the content."""
    try:
        return Secret(Path(path).read_text().strip())
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None


def _resolve_secrets(cfg: Config, environ: dict[str, str]) -> None:
    """Fill password/token from *_file keys and systemd credentials, in that order of preference."""
    creds = environ.get("CREDENTIALS_DIRECTORY")
    if cfg.database.password is None:
        if cfg.database.password_file:
            cfg.database.password = _read_secret_file("database.password_file", cfg.database.password_file)
        elif creds and (Path(creds) / CREDENTIAL_DB_PASSWORD).is_file():
            cfg.database.password = _read_secret_file(
                "database.password", str(Path(creds) / CREDENTIAL_DB_PASSWORD)
            )
    for key, name in CREDENTIAL_DB_TLS.items():
        if getattr(cfg.database, key) is None and creds and (Path(creds) / name).is_file():
            setattr(cfg.database, key, str(Path(creds) / name))
    if cfg.wgrest.token is None:
        if cfg.wgrest.token_file:
            cfg.wgrest.token = _read_secret_file("wgrest.token_file", cfg.wgrest.token_file)
        elif creds and (Path(creds) / CREDENTIAL_WGREST_TOKEN).is_file():
            cfg.wgrest.token = _read_secret_file("wgrest.token", str(Path(creds) / CREDENTIAL_WGREST_TOKEN))


def _validate(cfg: Config) -> None:
    """Range and choice checks, each error naming its key."""
    for key, choices in _CHOICES.items():
        obj: Any = cfg
        *parents, last = key.split(".")
        for p in parents:
            obj = getattr(obj, p)
        if getattr(obj, last) not in choices:
            raise ConfigError(f"{key}: must be one of {', '.join(choices)}")
    positive = {
        "kernel.timeout": cfg.kernel.timeout,
        "wgrest.timeout": cfg.wgrest.timeout,
        "database.connect_timeout": cfg.database.connect_timeout,
        "database.statement_timeout": cfg.database.statement_timeout,
        "daemon.interval": cfg.daemon.interval,
        "daemon.backoff_initial": cfg.daemon.backoff_initial,
        "daemon.backoff_max": cfg.daemon.backoff_max,
    }
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key}: must be greater than 0")
    if cfg.database.history_days < 0:
        raise ConfigError("database.history_days: must be 0 (keep forever) or more")
    if not 0 <= cfg.database.traffic_detail_hours <= MAX_HISTORY_DAYS * 24:
        raise ConfigError(
            f"database.traffic_detail_hours: must be 0 (never fold) to {MAX_HISTORY_DAYS * 24:g}"
        )
    for key, value in {
        "kernel.timeout": cfg.kernel.timeout,
        "wgrest.timeout": cfg.wgrest.timeout,
        "database.connect_timeout": cfg.database.connect_timeout,
        "database.statement_timeout": cfg.database.statement_timeout,
    }.items():
        # a call is bounded so a hung peer trips the watchdog; hours would defeat that
        # (and PostgreSQL's timeouts overflow past about 8 days)
        if value > MAX_TIMEOUT:
            raise ConfigError(f"{key}: must be at most {MAX_TIMEOUT:g} seconds")
    if cfg.database.history_days > MAX_HISTORY_DAYS:
        # the cutoff (now - history_days) must stay a valid date; 100 years is "keep"
        raise ConfigError(f"database.history_days: must be at most {MAX_HISTORY_DAYS} (or 0 to keep forever)")
    if cfg.daemon.spool_max_mb < 0:
        raise ConfigError("daemon.spool_max_mb: must be 0 (no spool) or more")
    if not cfg.daemon.spool_max_age > 0:
        raise ConfigError("daemon.spool_max_age: must be greater than 0")
    if not 0 <= cfg.daemon.jitter < 1:
        raise ConfigError("daemon.jitter: must be in [0, 1)")
    if cfg.persist.enabled and not cfg.kernel.enabled:
        raise ConfigError("persist.enabled: needs kernel.enabled (the snapshot is what the kernel runs)")
    if cfg.metrics.max_peer_series < 0:
        raise ConfigError("metrics.max_peer_series: must be 0 or more")
    if cfg.wgrest.per_page < 1:
        raise ConfigError("wgrest.per_page: must be at least 1")
    if not 0 < cfg.wgrest.max_answer_mib <= cfg.wgrest.max_read_mib <= 4096:
        raise ConfigError(
            "wgrest.max_answer_mib, wgrest.max_read_mib: need 0 < max_answer_mib <= max_read_mib <= 4096"
        )
    if not cfg.wgrest.url.startswith(("http://", "https://")):
        raise ConfigError("wgrest.url: must start with http:// or https://")
    if cfg.recovery_public_key:
        try:
            parse_key(cfg.recovery_public_key, "recovery_public_key")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if not cfg.host_id or len(cfg.host_id) > 128:
        raise ConfigError("host_id: must be 1 to 128 characters")


def load(
    path: str | None = None, environ: dict[str, str] | None = None, *, require_file: bool = False
) -> Config:
    """Read the file (if any), apply WGSYNCD_* overrides, resolve secrets, validate.

    Without an explicit path, $WGSYNCD_CONFIG or /etc/wgsyncd/wgsyncd.toml is read
    when it exists; a missing default file means built-in defaults.
    """
    environ = dict(os.environ if environ is None else environ)
    explicit = path or environ.get(ENV_PREFIX + "CONFIG")
    file_path = explicit or DEFAULT_PATH
    cfg = Config()
    try:
        with open(file_path, "rb") as fh:
            data = tomllib.load(fh)
        cfg.source_path = file_path
    except FileNotFoundError:
        if explicit or require_file:
            raise ConfigError(f"{file_path}: no such file") from None
        data = {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file_path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{file_path}: cannot read: {exc.strerror}") from None
    _apply(cfg, data, "")
    _apply(cfg, _env_values(environ), "")
    _resolve_secrets(cfg, environ)
    if not cfg.host_id:
        cfg.host_id = hostid.default_host_id()
    cfg.machine_fp = hostid.machine_fingerprint()
    if not cfg.hostname:
        cfg.hostname = socket.gethostname()
    _validate(cfg)
    return cfg
