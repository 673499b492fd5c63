"""Test bed: a throwaway PostgreSQL 15 cluster (real server, unix socket, optional TCP).

``PgCluster`` works outside pytest too (README demo, benchmark)::

    cluster = PgCluster.start("/tmp/somewhere")
    dsn = cluster.create_database()
    ...
    cluster.stop()

Fixtures: ``pg_cluster`` (session), ``pg_dsn`` (fresh, unmigrated database per test),
``pg_conn`` (a connection to a fresh, migrated database), ``db_config`` (a
``config.DatabaseConfig`` pointing at a fresh, unmigrated database).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.beds import unavailable

PG_BIN = Path(os.environ.get("WGSYNCD_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "postgres"


class PgBedError(RuntimeError):
    """The cluster could not be created, started or stopped; says which step and why."""


def free_tcp_port() -> int:
    """Ask the kernel for a free port on 127.0.0.1, so parallel runs do not collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as_user() -> str | None:
    """initdb refuses to run as root: run the server as ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise PgBedError("running as root but there is no 'postgres' user to own the cluster") from exc
    return "postgres"


def binaries_missing() -> str | None:
    """A reason to skip when PostgreSQL's server binaries are not installed, else None."""
    for name in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / name).is_file():
            return f"PostgreSQL server binary {PG_BIN / name} missing (apt install postgresql)"
    return None


@dataclass
class PgCluster:
    """One running cluster: data dir and socket in ``base_dir``, trust auth, superuser ``postgres``."""

    base_dir: Path
    port: int
    tcp: bool
    user: str | None
    tls: TlsFiles | None = None
    durable: bool = False  # fsync on, as in production (the fleet benchmark measures WAL flushes)

    @property
    def data_dir(self) -> Path:
        """Where initdb put the cluster."""
        return self.base_dir / "pg"

    @property
    def socket_dir(self) -> str:
        """The directory holding ``.s.PGSQL.<port>``; libpq's ``host`` for a socket."""
        return str(self.base_dir)

    @classmethod
    def start(
        cls,
        base_dir: str | os.PathLike[str],
        *,
        tcp: bool = False,
        tls: bool = False,
        hba: str | None = None,
        durable: bool = False,
    ) -> PgCluster:
        """initdb + start; listens on a unix socket in ``base_dir`` (and 127.0.0.1 if ``tcp``).

        ``base_dir`` must be reachable by the ``postgres`` user when we are root (a dir
        under /tmp made with mkdtemp is; pytest's tmp_path under /tmp/pytest-of-root is not).
        ``tls``: ssl=on with a server certificate for localhost/127.0.0.1 signed by a CA
        made here (``cluster.tls``); ``hba``: pg_hba.conf lines put before initdb's.
        """
        reason = binaries_missing()
        if reason:
            raise PgBedError(reason)
        base = Path(base_dir).resolve()
        base.mkdir(parents=True, exist_ok=True)
        user = _run_as_user()
        if user:
            shutil.chown(base, user=user)
        port = free_tcp_port() if tcp else 5432
        if len(str(base / f".s.PGSQL.{port}")) > 100:
            raise PgBedError(f"{base}: path too long for a unix socket")
        cluster = cls(base_dir=base, port=port, tcp=tcp, user=user, durable=durable)
        cluster._pg(
            "initdb",
            "-D",
            str(cluster.data_dir),
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        if tls:
            cluster.tls = make_tls(base / "tls", owner=user)
        if hba:
            conf = cluster.data_dir / "pg_hba.conf"
            conf.write_text(hba.rstrip("\n") + "\n" + conf.read_text())
        cluster._pg(
            "pg_ctl",
            "-D",
            str(cluster.data_dir),
            "-o",
            cluster._opts(),
            "-l",
            str(base / "log"),
            "-w",
            "start",
        )
        return cluster

    def _pg(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a server tool as the cluster owner; a failure names the tool and its stderr."""
        proc = subprocess.run(
            [str(PG_BIN / tool), *args],
            user=self.user,
            cwd=str(self.base_dir),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise PgBedError(f"{tool} {' '.join(args[:2])} failed: {proc.stderr.strip()[-500:]}")
        return proc

    def dsn(self, dbname: str = "postgres", *, via_tcp: bool = False, user: str = SUPERUSER) -> str:
        """A libpq conninfo for ``dbname`` over the socket (or TCP when asked and enabled)."""
        host = "127.0.0.1" if via_tcp else self.socket_dir
        if via_tcp and not self.tcp:
            raise PgBedError("cluster was started without tcp=True")
        return f"host={host} port={self.port} dbname={dbname} user={user}"

    def admin(self, sql: str, dbname: str = "postgres") -> None:
        """Run one statement as superuser in autocommit (CREATE DATABASE, roles, grants)."""
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, name: str | None = None) -> str:
        """CREATE DATABASE (a random name by default) and return its DSN."""
        name = name or "t_" + uuid.uuid4().hex[:12]
        self.admin(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def create_owned_database(self) -> tuple[str, str]:
        """A database owned by a new non-superuser LOGIN role with CREATEROLE (the schema
        owner of a real deployment; row-level security applies to it, unlike to a
        superuser). Returns (its DSN, the owner's role name); roles are cluster-wide,
        so every name is random."""
        suffix = uuid.uuid4().hex[:10]
        owner, name = f"owner_{suffix}", f"t_{suffix}"
        self.admin(f'CREATE ROLE "{owner}" LOGIN CREATEROLE')
        self.admin(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        return self.dsn(name, user=owner), owner

    def create_host_database(self, host_id: str) -> str:
        """An owned, migrated database with ``host_id`` bound to a new host role: that role's DSN."""
        import psycopg

        from wgsyncd import store
        from wgsyncd.store import roles

        dsn, _owner = self.create_owned_database()
        role = f"host_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(dsn) as conn:
            store.migrate(conn)
            roles.add_host(conn, host_id, role)
        return self.dsn(str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]), user=role)

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop; ``mode`` is smart|fast|immediate."""
        if self.data_dir.exists():
            self._pg("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop", check=False)

    def crash(self) -> None:
        """Stop like a power cut (``-m immediate``): no checkpoint, clients see a dead server."""
        self.stop("immediate")

    def _opts(self) -> str:
        """Server options: our socket dir and port, TCP only if asked, no fsync (tests only).

        fsync=off survives a server crash (``crash()``: the OS still has the pages),
        only an OS crash would lose data; commits stay synchronous so a test that
        crashes the server right after a commit still finds the commit.
        """
        listen = "127.0.0.1" if self.tcp else ""
        opts = (
            f"-p {self.port} -k {self.base_dir} -c listen_addresses='{listen}' -c fsync=off "
            "-c max_connections=200"
        )
        if self.durable:
            opts = opts.replace(" -c fsync=off", "")
        if self.tls:
            t = self.tls
            opts += f" -c ssl=on -c ssl_cert_file={t.server_crt} -c ssl_key_file={t.server_key}"
            opts += f" -c ssl_ca_file={t.ca}"
        return opts

    def restart(self) -> None:
        """Start a stopped (or crashed) cluster again, same port and socket."""
        self._pg(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-o",
            self._opts(),
            "-l",
            str(self.base_dir / "log"),
            "-w",
            "start",
        )


@dataclass
class TlsFiles:
    """A test CA and a server certificate (CN localhost, SAN localhost + 127.0.0.1) it signed."""

    directory: Path
    ca: Path
    ca_key: Path
    server_crt: Path
    server_key: Path

    def client(self, name: str, ca: Path | None = None, ca_key: Path | None = None) -> tuple[Path, Path]:
        """A client certificate with CN ``name`` (a role, for ``cert`` auth): (crt, key), key 0600."""
        return issue(self.directory, name, f"/CN={name}", ca or self.ca, ca_key or self.ca_key)


def _openssl(*args: str) -> None:
    """Run openssl; a failure names the subcommand and its stderr."""
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise PgBedError(f"openssl {args[0]} failed: {proc.stderr.strip()[-300:]}")


def make_ca(directory: Path, name: str = "wgsyncd-test-ca") -> tuple[Path, Path]:
    """A self-signed CA (EC P-256, 2 days): (certificate, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(ca),
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    return ca, key


def issue(
    directory: Path, name: str, subject: str, ca: Path, ca_key: Path, extfile: Path | None = None
) -> tuple[Path, Path]:
    """An EC P-256 key and a 2-day certificate for ``subject`` signed by ``ca``: (crt, key), key 0600."""
    key, crt = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(crt) + ".csr", "-subj", subject)  # fmt: skip
    extra = ("-extfile", str(extfile)) if extfile else ()
    _openssl("x509", "-req", "-in", str(crt) + ".csr", "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(crt), "-days", "2", *extra)  # fmt: skip
    key.chmod(0o600)
    return crt, key


def make_tls(directory: Path, owner: str | None = None) -> TlsFiles:
    """The CA and the server's certificate; the server key readable by the cluster's user only."""
    ca, ca_key = make_ca(directory)
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    crt, key = issue(directory, "server", "/CN=localhost", ca, ca_key, ext)
    if owner:
        shutil.chown(directory, user=owner)
        shutil.chown(key, user=owner)
    return TlsFiles(directory, ca, ca_key, crt, key)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One cluster for the whole session (about 2 s), with TCP on a free port too."""
    reason = binaries_missing()
    if reason:
        unavailable("PostgreSQL", reason)
    base = tempfile.mkdtemp(prefix="wgs-pg-", dir="/tmp")
    cluster = PgCluster.start(base, tcp=True)
    try:
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster) -> str:
    """A fresh, empty (unmigrated) database for this test."""
    return pg_cluster.create_database()


@pytest.fixture
def pg_conn(pg_cluster: PgCluster) -> Iterator[object]:
    """A psycopg connection (autocommit off) to a fresh database with the schema migrated."""
    import psycopg

    from wgsyncd import store

    conn = psycopg.connect(pg_cluster.create_database())
    try:
        store.migrate(conn)
        yield conn
    finally:
        conn.close()


@pytest.fixture
def conn(db_config: Any) -> Iterator[Any]:
    """A store connection (wgsyncd's timeouts, no session state) to a fresh, migrated database."""
    from wgsyncd import store

    c = store.connect(db_config)
    try:
        store.migrate(c)
        yield c
    finally:
        c.close()


@pytest.fixture
def db_config(pg_cluster: PgCluster) -> object:
    """A DatabaseConfig for a fresh, unmigrated database (the caller runs store.migrate)."""
    from wgsyncd.config import DatabaseConfig

    return DatabaseConfig(dsn=pg_cluster.create_database(), connect_timeout=5.0, statement_timeout=20.0)


def fake_key(*parts: object) -> str:
    """A deterministic, valid-looking base64 WireGuard key from ``parts`` (same parts, same key)."""
    import base64
    import hashlib

    raw = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return base64.b64encode(raw).decode()


def synthetic_state(
    host_id: str = "host-a",
    *,
    interfaces: int = 2,
    peers: int = 250,
    collected_at: object = None,
    counters: int | None = 1000,
) -> object:
    """A merged HostState with keys, preshared keys and conf text, for store tests and benchmarks.

    Same arguments give an equal state (keys are derived from host, interface and
    index), so a test can build "the same state again" and change one thing.
    """
    from datetime import UTC, datetime

    from wgsyncd.state import HostState, Interface, Peer, Secret, Source

    when = collected_at or datetime.now(UTC)
    state = HostState(host_id=host_id, hostname=f"{host_id}.example", collected_at=when)  # type: ignore[arg-type]
    state.sources = {Source.KERNEL: True, Source.CONF: True}
    for i in range(interfaces):
        name = f"wg{i}"
        priv = fake_key(host_id, name, "private")
        iface = Interface(
            name=name,
            private_key=Secret(priv),
            public_key=fake_key(host_id, name, "public"),
            listen_port=51820 + i,
            fwmark=0,
            addresses=(f"198.51.100.{i + 1}/24",),
            dns=("192.0.2.53",),
            mtu=1420,
            post_up=(f"iptables -A FORWARD -i {name} -j ACCEPT",),
            save_config=False,
            conf_path=f"/etc/wireguard/{name}.conf",
            conf_text=Secret(f"[Interface]\nPrivateKey = {priv}\n"),
            comments=(f"# {host_id} {name}",),
            implementation="userspace",
            provenance={"listen_port": Source.KERNEL, "addresses": Source.CONF},
            seen_by=(Source.KERNEL, Source.CONF),
        )
        for j in range(peers):
            pub = fake_key(host_id, name, "peer", j)
            iface.peers[pub] = Peer(
                public_key=pub,
                preshared_key=Secret(fake_key(host_id, name, "psk", j)),
                allowed_ips=(f"10.{i}.{j // 250}.{j % 250 + 1}/32",),
                endpoint=f"203.0.113.{j % 250 + 1}:{40000 + j}" if j % 2 else None,
                persistent_keepalive=25 if j % 3 == 0 else 0,
                name=f"{host_id}-{name}-peer{j}",
                comments=(f"# {host_id} peer {j}",),
                disabled=False,
                private_key=Secret(fake_key(host_id, name, "peerpriv", j)) if j % 5 == 0 else None,
                rx_bytes=None if counters is None else counters + j,
                tx_bytes=None if counters is None else 2 * counters + j,
                latest_handshake=None,
                provenance={"allowed_ips": Source.CONF, "endpoint": Source.KERNEL},
                seen_by=(Source.KERNEL, Source.CONF),
            )
        state.interfaces[name] = iface
    return state
