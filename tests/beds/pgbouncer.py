"""Test bed: a real pgbouncer (Debian's 1.18) in transaction mode in front of a PgCluster.

Started as its own process with its own ini, port and socket directory (never the
system's service). The pool is small on purpose (``default_pool_size=2``) and
``server_round_robin=1``: with several clients, server connections are really
shared, and one client's consecutive transactions land on different server
connections, which is what breaks session state. ``ignore_startup_parameters`` is
empty by default, so a client sending ``options`` is refused, as a stock pgbouncer
does. Works outside pytest too (the benchmark)::

    bouncer = PgBouncer.start("/tmp/somewhere", cluster)
    dsn = bouncer.dsn("dbname")
    ...
    bouncer.stop()

Fixtures: ``pgbouncer`` (session, in front of ``pg_cluster``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.beds import unavailable
from tests.beds.postgres import SUPERUSER, PgCluster, free_tcp_port

PGBOUNCER = Path(os.environ.get("WGSYNCD_PGBOUNCER", "/usr/sbin/pgbouncer"))
_READY_TIMEOUT = 15.0


class PgBouncerBedError(RuntimeError):
    """pgbouncer could not be started; says why (with the tail of its log)."""


def missing_reason() -> str | None:
    """A reason to skip when the pgbouncer binary is missing, else None."""
    if not PGBOUNCER.is_file():
        return f"{PGBOUNCER} missing (apt install pgbouncer)"
    return None


@dataclass
class PgBouncer:
    """One running pgbouncer: ini, log and socket in ``base_dir``; every database of ``cluster``."""

    base_dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    pool_size: int

    @classmethod
    def start(
        cls,
        base_dir: str | os.PathLike[str],
        cluster: PgCluster,
        *,
        pool_size: int = 2,
        ignore_startup_parameters: str = "",
        max_client_conn: int = 1000,
    ) -> PgBouncer:
        """Write the ini and start ``pgbouncer INI`` in the foreground; wait until it answers."""
        reason = missing_reason()
        if reason:
            raise PgBouncerBedError(reason)
        base = Path(base_dir).resolve()
        base.mkdir(parents=True, exist_ok=True)
        port = free_tcp_port()
        (base / "userlist.txt").write_text(f'"{SUPERUSER}" ""\n')
        ini = base / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            # '*': any database name, forwarded to the same name on the cluster, logged in
            # as the client's own user (a pool per database and user), so roles stay real
            f"* = host={cluster.socket_dir} port={cluster.port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {port}\n"
            f"unix_socket_dir = {base}\n"
            "auth_type = trust\n"
            f"auth_file = {base / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            "reserve_pool_size = 0\n"
            f"max_client_conn = {max_client_conn}\n"
            "server_round_robin = 1\n"
            f"admin_users = {SUPERUSER}\n"
            f"ignore_startup_parameters = {ignore_startup_parameters}\n"
            f"logfile = {base / 'pgbouncer.log'}\n"
            f"pidfile = {base / 'pgbouncer.pid'}\n"
        )
        # pgbouncer refuses to run as root: run it as the cluster's owner then
        user = cluster.user
        if user:
            shutil.chown(base, user=user)
            for f in base.iterdir():
                shutil.chown(f, user=user)
        proc = subprocess.Popen(
            [str(PGBOUNCER), str(ini)],
            user=user,
            cwd=str(base),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        bouncer = cls(base_dir=base, port=port, proc=proc, pool_size=pool_size)
        try:
            bouncer._wait_ready()
        except BaseException:
            bouncer.stop()
            raise
        return bouncer

    def _wait_ready(self) -> None:
        """Poll the admin console until it answers; fail with the log if pgbouncer exits."""
        import psycopg

        deadline = time.monotonic() + _READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise PgBouncerBedError(f"pgbouncer exited {self.proc.returncode}: {self.log()[-800:]}")
            try:
                with psycopg.connect(self.dsn("pgbouncer"), autocommit=True, connect_timeout=2) as conn:
                    conn.execute("SHOW VERSION")
                return
            except psycopg.Error as exc:
                if time.monotonic() > deadline:
                    raise PgBouncerBedError(f"pgbouncer not answering: {exc}; {self.log()[-800:]}") from None
            time.sleep(0.05)  # polling a condition with a deadline, not a synchronisation sleep

    @property
    def socket_dir(self) -> str:
        """The directory holding pgbouncer's ``.s.PGSQL.<port>``."""
        return str(self.base_dir)

    def dsn(self, dbname: str, *, via_tcp: bool = False, user: str = SUPERUSER) -> str:
        """A libpq conninfo for ``dbname`` through pgbouncer (socket, or 127.0.0.1 when asked)."""
        host = "127.0.0.1" if via_tcp else self.socket_dir
        return f"host={host} port={self.port} dbname={dbname} user={user}"

    def route(self, direct_dsn: str) -> str:
        """The pgbouncer DSN of the database a direct ``PgCluster.dsn`` names."""
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(direct_dsn)
        return self.dsn(str(params["dbname"]), user=str(params.get("user") or SUPERUSER))

    def add_user(self, name: str) -> None:
        """Let role ``name`` through (auth_type trust still wants it in auth_file); RELOAD."""
        import psycopg

        if not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"not a plain role name: {name!r}")
        with open(self.base_dir / "userlist.txt", "a") as fh:
            fh.write(f'"{name}" ""\n')
        with psycopg.connect(self.dsn("pgbouncer"), autocommit=True) as conn:
            conn.execute("RELOAD")

    def fill_pool(self, dbname: str) -> set[int]:
        """Open every server connection of ``dbname``'s pool (all of them in a transaction at
        once), so the next transactions rotate over them; returns their backend pids."""
        import psycopg

        conns = [psycopg.connect(self.dsn(dbname), prepare_threshold=None) for _ in range(self.pool_size)]
        try:
            pids = {c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in conns}  # type: ignore[index]
            for c in conns:
                c.commit()  # a server connection closed mid-transaction is dropped, not pooled
            return pids
        finally:
            for c in conns:
                c.close()

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW <what>`` on the admin console (POOLS, SERVERS, CLIENTS, STATS), as dicts."""
        import psycopg
        from psycopg.rows import dict_row

        if not what.replace("_", "").isalpha():
            raise ValueError(f"not an admin console SHOW target: {what!r}")
        with psycopg.connect(self.dsn("pgbouncer"), autocommit=True, row_factory=dict_row) as conn:
            return conn.execute(f"SHOW {what}").fetchall()

    def pool(self, dbname: str, user: str = SUPERUSER) -> dict[str, Any]:
        """The SHOW POOLS row of one database (and user); {} when it has no pool yet."""
        for row in self.show("POOLS"):
            if row["database"] == dbname and row["user"] == user:
                return row
        return {}

    def log(self) -> str:
        """pgbouncer's log so far (for failure messages)."""
        try:
            return (self.base_dir / "pgbouncer.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (immediate shutdown), then SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def pgbouncer(pg_cluster: PgCluster) -> Iterator[PgBouncer]:
    """One pgbouncer (transaction mode, 2 server connections per database) for the session."""
    reason = missing_reason()
    if reason:
        unavailable("pgbouncer", reason)
    base = tempfile.mkdtemp(prefix="wgs-pgb-", dir="/tmp")
    bouncer = PgBouncer.start(base, pg_cluster)
    try:
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(base, ignore_errors=True)
