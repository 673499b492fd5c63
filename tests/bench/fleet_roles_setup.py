"""The parts of the one-role-per-host fleet run (tests/bench/fleet_roles.py) that stand up
and read the real things: host roles with SCRAM passwords, a pgbouncer that logs each host
in as itself, and what PostgreSQL's backends cost (sessions started, /proc memory, CPU).

Kept apart from the run and its arithmetic so each stays short; nothing here is timed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import resource
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.bench.fleet_gen import host_name


def role_name(h: int) -> str:
    """Host number -> its login role (host_id fleet-00042 -> wgs_fleet_00042)."""
    return "wgs_" + host_name(h).replace("-", "_")


def host_password(secret: str, h: int) -> str:
    """Host ``h``'s password, derived from this run's random secret (never printed)."""
    return hmac.new(bytes.fromhex(secret), str(h).encode(), hashlib.sha256).hexdigest()


def role_conninfo(dsn: str, h: int, secret: str) -> str:
    """The shared pgbouncer DSN with host ``h``'s own role and password."""
    return f"{dsn} user={role_name(h)} password={host_password(secret, h)}"


def pgbouncer_ini(
    base: Path, port: int, dbname: str, socket_dir: str, pg_port: int, mode: dict[str, Any]
) -> str:
    """A fleet pgbouncer: transaction mode, SCRAM for host roles, one pool per role."""
    return (
        "[databases]\n"
        # no user= : each client logs in to PostgreSQL as its own role (SCRAM pass-through)
        f"{dbname} = host={socket_dir} port={pg_port} dbname={dbname}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        f"unix_socket_dir = {base}\n"
        "auth_type = hba\n"
        f"auth_hba_file = {base / 'hba.conf'}\n"
        f"auth_file = {base / 'userlist.txt'}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {mode['pool_size']}\n"
        "reserve_pool_size = 0\n"
        f"max_client_conn = {mode['max_client_conn']}\n"
        f"max_db_connections = {mode['max_db_connections']}\n"
        f"server_idle_timeout = {mode['server_idle_timeout']:g}\n"
        "admin_users = postgres\n"
        "ignore_startup_parameters = \n"
        f"logfile = {base / 'pgbouncer.log'}\n"
        f"pidfile = {base / 'pgbouncer.pid'}\n"
    )


PGBOUNCER_HBA = "local pgbouncer postgres trust\nlocal all all scram-sha-256\n"
# PostgreSQL: host roles by SCRAM; the bench's superuser and owner keep the bed's trust
POSTGRES_HBA = "local all +wgsyncd_host scram-sha-256"


def raise_fd_limit() -> None:
    """Thousands of client and server sockets: soft open-files limit up to the hard one."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def with_max_connections(max_connections: int) -> type:
    """PgCluster with room for one backend per host (the bed's default is 200)."""
    from tests.beds.postgres import PgCluster

    class BigCluster(PgCluster):
        def _opts(self) -> str:
            return super()._opts().replace("max_connections=200", f"max_connections={max_connections}")

    return BigCluster


def make_roles(owner_dsn: str, cluster: Any, dbname: str, hosts: int, secret: str) -> list[str]:
    """``add_host`` with a password for the template and every host; their SCRAM verifiers
    as pgbouncer's auth_file lines (what a DBA copies from pg_authid)."""
    import psycopg

    from tests.bench.fleet_record import TEMPLATE_HOST
    from wgsyncd.store import roles

    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        roles.add_host(conn, TEMPLATE_HOST, "wgs_template", host_password(secret, -1))
        for h in range(hosts):
            roles.add_host(conn, host_name(h), role_name(h), host_password(secret, h))
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolname LIKE 'wgs\\_fleet\\_%' ORDER BY 1"
        ).fetchall()
    return ['"postgres" ""', *(f'"{name}" "{verifier}"' for name, verifier in rows)]


def start_bouncer(base: Path, cluster: Any, dbname: str, mode: dict[str, Any], users: list[str]) -> Any:
    """Write ini, hba and auth_file; start pgbouncer as the cluster's owner; wait for it."""
    from tests.beds.pgbouncer import PGBOUNCER, PgBouncer
    from tests.beds.postgres import free_tcp_port

    base.mkdir(parents=True)
    port = free_tcp_port()
    (base / "pgbouncer.ini").write_text(
        pgbouncer_ini(base, port, dbname, cluster.socket_dir, cluster.port, mode)
    )
    (base / "hba.conf").write_text(PGBOUNCER_HBA)
    (base / "userlist.txt").write_text("\n".join(users) + "\n")
    os.chmod(base / "userlist.txt", 0o600)
    if cluster.user:
        for p in (base, *base.iterdir()):
            shutil.chown(p, user=cluster.user)
    quiet = subprocess.DEVNULL
    cmd = [str(PGBOUNCER), str(base / "pgbouncer.ini")]
    proc = subprocess.Popen(cmd, user=cluster.user, cwd=str(base), stdin=quiet, stdout=quiet, stderr=quiet)
    bouncer = PgBouncer(base_dir=base, port=port, proc=proc, pool_size=mode["pool_size"])
    bouncer._wait_ready()
    return bouncer


def host_backends(admin_dsn: str) -> list[int]:
    """PIDs of the PostgreSQL backends logged in as a host role."""
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE usename LIKE 'wgs\\_fleet\\_%'"
        ).fetchall()
    return [r[0] for r in rows]


def _own_bytes(pid: int) -> dict[str, int] | None:
    """Rss, Pss, the pages only this backend maps in its private mappings (/proc/PID/smaps;
    shared memory, e.g. shared_buffers, and pages still shared with the postmaster left out)
    and its page tables (VmPTE): what one more backend costs; None when it ended meanwhile."""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    out = {"rss": 0, "pss": 0, "private": 0, "page_tables": 0}
    private_mapping = False
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and not head.endswith(":"):  # a mapping's header: start-end perms ...
            private_mapping = rest[3:4] == "p"
        elif head == "Rss:":
            out["rss"] += int(rest.split()[0]) * 1024
        elif head == "Pss:":
            out["pss"] += int(rest.split()[0]) * 1024
        elif head in ("Private_Clean:", "Private_Dirty:") and private_mapping:
            out["private"] += int(rest.split()[0]) * 1024
    for line in status.splitlines():
        if line.startswith("VmPTE:"):
            out["page_tables"] = int(line.split()[1]) * 1024
    return out


def backend_memory(pids: list[int]) -> dict[str, Any]:
    """Mean and total Rss / Pss / own private bytes / page tables of those backends;
    ``own_mean``: private + page tables, the figure to multiply by the backend count."""
    per = [m for m in map(_own_bytes, pids) if m is not None]
    n = len(per)
    out: dict[str, Any] = {"backends": n}
    for k in ("rss", "pss", "private", "page_tables"):
        total = sum(p[k] for p in per)
        out[f"{k}_total"], out[f"{k}_mean"] = total, (total / n if n else 0)
    out["own_mean"] = out["private_mean"] + out["page_tables_mean"]
    return out


def connect_only_cpu_ms(cluster: Any, dsn: str, n: int) -> float:
    """PostgreSQL CPU of one bare session as a host role (fork, SCRAM, ``SELECT 1``, exit),
    direct, n in a row: the part of a churned cycle that is not the cycle's own work."""
    import psycopg

    from tests.bench.multihost import postgres_cpu_s

    a = postgres_cpu_s(cluster.data_dir)
    for _ in range(n):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT 1")
    return 1000 * (postgres_cpu_s(cluster.data_dir) - a) / n


def log_size(cluster: Any) -> int:
    """Where the server log ends now: the mark :func:`host_logins` counts from."""
    return (cluster.base_dir / "log").stat().st_size


def host_logins(cluster: Any, since: int) -> int:
    """Backends a host role logged in to since the mark, from ``log_connections`` lines.

    pg_stat_database.sessions lags: a backend adds its connect to the shared counter only
    when it flushes its stats, which, when another backend holds the entry, waits for its
    next idle flush (up to 10 s later) and lands in the wrong window (CI saw it once). A
    backend writes its "connection authorized" line itself before it runs a query.
    """
    with open(cluster.base_dir / "log", "rb") as f:
        f.seek(since)
        text = f.read().decode("utf-8", "replace")
    return len(re.findall(r"connection authorized: user=wgs_fleet_\d+ ", text))
