"""``python -m tests.bench.fleet_roles``: the fleet with one login role per host, through pgbouncer.

Why: the fleet benchmark (tests/bench/fleet.py) logs every simulated host in as the
schema owner, one pgbouncer pool. Deployed, each host has its own role (``wgsyncd db
add-host``, row-level security and the SECURITY DEFINER put functions check it), and
pgbouncer keeps one pool per (database, user): a server connection serves one host.
So either every host keeps an idle PostgreSQL backend (``server_idle_timeout`` above
the interval), or most cycles need a new one (fork, SCRAM authentication, cold
catalog and PL/pgSQL caches). This measures both on real parts:

- PostgreSQL 15 (fsync on), host roles made by ``store.roles.add_host`` with a
  password (a SCRAM-SHA-256 verifier), ``pg_hba``: ``scram-sha-256`` for wgsyncd_host
  members; pgbouncer 1.18, transaction mode, ``auth_type = hba`` (``scram-sha-256``),
  ``auth_file`` holding the roles' verifiers read from ``pg_authid`` (so pgbouncer logs
  in to PostgreSQL with the client's own SCRAM keys), one pool per host role;
- each simulated host holds its own client connection as its own role and replays
  the writer's recorded cycles (tests/bench/fleet_record.py, recorded as a bound host
  role) with its host_id: row-level security checks every row as in production.

Modes (one pgbouncer each, the same database): ``keep`` (server_idle_timeout above the
interval: one backend per host stays) and ``churn`` (below it: a backend per cycle).
Per mode one paced run of ``--rounds`` intervals: PostgreSQL CPU per cycle (reaped
backends included), pgbouncer CPU, latency, backends forked per cycle
(the server log's connection lines), server connections at the end and the memory of each
host backend (/proc/PID/smaps_rollup), and whether every cycle was committed within
``--slack`` seconds of its slot. ``extrapolate`` scales the figures to 10,000 hosts.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench.fleet_roles_setup import (
    POSTGRES_HBA,
    backend_memory,
    connect_only_cpu_ms,
    host_backends,
    host_logins,
    host_password,
    log_size,
    make_roles,
    raise_fd_limit,
    role_name,
    start_bouncer,
    with_max_connections,
)

MODES = ("keep", "churn", "cap")


def mode_settings(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """pgbouncer settings of a mode: keep (idle backends outlive the interval), churn (they
    do not), cap (they would, but at most ``--cap`` server connections to the database)."""
    idle = args.churn_idle_timeout if name == "churn" else args.interval * 5
    return {
        "mode": name,
        "pool_size": 1,  # a host has one client connection: its pool never needs two
        "max_client_conn": args.hosts + 100,
        "max_db_connections": args.cap if name == "cap" else 0,
        "server_idle_timeout": idle,
    }


def new_backend_cpu_ms(step: dict[str, Any], keep: dict[str, Any]) -> float:
    """PostgreSQL CPU a new backend adds to a cycle (fork, SCRAM, cold catalog and PL/pgSQL
    caches): this mode's cost per cycle over keep mode's, per backend forked."""
    if not step["backends_per_cycle"]:
        return 0.0
    return (step["db_cpu_ms_per_cycle"] - keep["db_cpu_ms_per_cycle"]) / step["backends_per_cycle"]


def extrapolate(
    step: dict[str, Any], hosts: int = 10_000, interval: float = 60.0, keep: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A measured mode scaled to ``hosts`` every ``interval`` s: what grows with the cycle rate
    (CPU per cycle, forks per cycle) scales with hosts / interval, what grows with the host
    count (idle backends in keep mode) with hosts. A churn or cap mode measured beside keep
    mode is scaled at one new backend per cycle (a deployed interval far above
    server_idle_timeout; a run that fell behind measured fewer, its hosts' cycles bunched)."""
    rate = hosts / interval
    forks, cycle_ms = step["backends_per_cycle"], step["db_cpu_ms_per_cycle"]
    if keep is not None and step["mode"] != "keep":
        forks, cycle_ms = 1.0, keep["db_cpu_ms_per_cycle"] + new_backend_cpu_ms(step, keep)
    out: dict[str, Any] = {
        "hosts": hosts,
        "interval_s": interval,
        "cycles_per_s": rate,
        "postgres_cpu_ms_per_cycle": cycle_ms,
        "postgres_cores": rate * cycle_ms / 1000,
        "pgbouncer_cores": rate * step["pooler_cpu_ms_per_cycle"] / 1000,
        "backends_forked_per_s": rate * forks,
    }
    mem = step.get("backend_memory") or {}
    if step["mode"] == "keep":
        out["server_connections"] = hosts
    elif step["mode"] == "cap":  # the cap is its server connections
        out["server_connections"] = step["max_db_connections"]
    else:  # a backend lives its cycle (as long as in keep mode, if measured) + server_idle_timeout
        cycle_s = (keep or step)["latency_p50_s"]
        out["server_connections"] = rate * (step["server_idle_timeout"] + cycle_s)
    out["backend_memory_bytes"] = out["server_connections"] * mem.get("own_mean", 0)
    return out


def _settled(bouncer: Any, dbname: str, mode: dict[str, Any], deadline_s: float) -> int:
    """churn: wait (with a deadline) until the server connections made at login have timed
    out, so the measured cycles start with none; returns how many remain."""
    end = time.monotonic() + deadline_s
    while True:
        left = sum(r["sv_idle"] + r["sv_used"] for r in bouncer.show("POOLS") if r["database"] == dbname)
        if mode["mode"] != "churn" or left == 0 or time.monotonic() > end:
            return int(left)
        time.sleep(0.5)  # polling a condition with a deadline


def run_mode(ctx: dict[str, Any], name: str, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    """One pgbouncer in ``name`` mode; every host connects as its role; one paced run."""
    from tests.bench.fleet import Probe, _measured, _run
    from tests.bench.multihost import _pct, process_cpu_s

    cluster, dbname, admin = ctx["cluster"], ctx["dbname"], ctx["admin_dsn"]
    mode = mode_settings(name, args)
    bouncer = start_bouncer(ctx["base"] / f"pgb-{name}", cluster, dbname, mode, ctx["users"])
    try:
        probe = Probe(cluster, bouncer, admin)
        dur = args.rounds * args.interval
        marks: dict[str, Any] = {}

        def before_go() -> None:  # all hosts logged in: let login's backends go, then count
            marks["left_at_start"] = _settled(bouncer, dbname, mode, 3 * mode["server_idle_timeout"] + 30)
            marks["log"], marks["pgb_cpu"] = log_size(cluster), process_cpu_s(bouncer.proc.pid)

        got = _run("paced", probe, bouncer.dsn(dbname), ctx["rec"], list(range(args.hosts)), args.workers,
                   before_go=before_go, role_secret=ctx["secret"], interval=args.interval, m=args.hosts,
                   duration_s=dur, idle_percent=args.idle_percent, k0=10_000)  # fmt: skip
        recs = got["records"]
        last = max((r[4] for r in recs), default=got["start"])
        out = _measured("paced", probe, got, max(dur, last - got["start"]))
        pids = host_backends(admin)
        lag = [end - due for _h, _k, due, _s, end, _ok in recs]
        out.update(mode, hosts=args.hosts, interval_s=args.interval)
        out["required_cycles_per_s"] = args.hosts / args.interval
        out.update(
            backends_per_cycle=host_logins(cluster, marks["log"]) / len(recs),
            pooler_cpu_ms_per_cycle=1000 * (process_cpu_s(bouncer.proc.pid) - marks["pgb_cpu"]) / len(recs),
            server_connections_left_at_start=marks["left_at_start"],
            server_connections_at_end=len(pids),
            backend_memory=backend_memory(pids),
            done_after_slot_p50_s=_pct(lag, 0.5),
            done_after_slot_p99_s=_pct(lag, 0.99),
            done_after_slot_max_s=max(lag, default=0.0),
            loadavg=os.getloadavg(),
        )
        out["keeps_up"] = len(recs) == args.hosts * args.rounds and out["done_after_slot_max_s"] <= args.slack
        if name != "keep":
            out["connect_only_cpu_ms"] = connect_only_cpu_ms(cluster, ctx["host0_dsn"], args.connects)
        log(_line(out))
        return out
    finally:
        bouncer.stop()


def run(args: argparse.Namespace, log: Any = print) -> dict[str, Any]:
    """PostgreSQL, roles, the recording (as a bound host role), populate, then each mode."""
    import psycopg

    from tests.bench.fleet import Probe, _measured, _run
    from tests.bench.fleet_db import apply_settings
    from tests.bench.fleet_record import record
    from wgsyncd import store

    raise_fd_limit()
    base = Path(tempfile.mkdtemp(prefix="wgsyncd-fleetroles-", dir="/tmp"))
    os.chmod(base, 0o755)
    cluster = with_max_connections(args.hosts + 100).start(base / "db", durable=True, hba=POSTGRES_HBA)
    try:
        settings = apply_settings(cluster, [*args.pg_set, "log_connections=on"])  # host_logins
        owner_dsn, _owner = cluster.create_owned_database()
        dbname = str(psycopg.conninfo.conninfo_to_dict(owner_dsn)["dbname"])
        with psycopg.connect(owner_dsn) as conn:
            store.migrate(conn)
        secret = secrets.token_hex(16)
        t0 = time.monotonic()
        users = make_roles(owner_dsn, cluster, dbname, args.hosts, secret)
        log(f"  {args.hosts} host roles (add_host with a password) in {time.monotonic() - t0:.0f} s")
        template_dsn = f"{cluster.dsn(dbname, user='wgs_template')} password={host_password(secret, -1)}"
        rec = record(template_dsn, args.peers, tempfile.mkdtemp(dir=base))
        admin = cluster.dsn()  # not the host database: its sessions count host backends
        cluster.admin("CREATE EXTENSION IF NOT EXISTS pg_walinspect")  # WAL breakdown (probe)
        host0 = f"{cluster.dsn(dbname, user=role_name(0))} password={host_password(secret, 0)}"
        ctx = {"cluster": cluster, "dbname": dbname, "admin_dsn": admin, "users": users, "rec": rec,
               "secret": secret, "base": base, "host0_dsn": host0}  # fmt: skip
        res: dict[str, Any] = {
            "hosts": args.hosts, "peers_per_host": args.peers, "interval_s": args.interval,
            "rounds": args.rounds, "workers": args.workers, "slack_s": args.slack,
            "idle_percent": args.idle_percent, "postgres_settings": settings,
            "auth": "scram-sha-256 client->pgbouncer (auth_file: verifiers from pg_authid) and "
            "pgbouncer->PostgreSQL (pass-through), unix sockets",
        }  # fmt: skip
        # populate: every host's first sync through a keep-mode pgbouncer, as its own role
        bouncer = start_bouncer(base / "pgb-populate", cluster, dbname, mode_settings("keep", args), users)
        try:
            probe = Probe(cluster, bouncer, admin)
            got = _run("populate", probe, bouncer.dsn(dbname), rec, list(range(args.hosts)), args.workers,
                       role_secret=secret, inflight=4)  # fmt: skip
            res["populate"] = _measured("populate", probe, got)
            log(f"  populate: {len(got['records'])} first syncs as their own roles")
        finally:
            bouncer.stop()
        res["modes"] = modes = [run_mode(ctx, m, args, log) for m in args.modes]
        keep = next((m for m in modes if m["mode"] == "keep"), None)
        for m in modes:
            if keep is not None and m is not keep:
                m["new_backend_cpu_ms"] = new_backend_cpu_ms(m, keep)
            m["at_10000_hosts"] = extrapolate(m, keep=keep)
        return res
    finally:
        cluster.stop("fast")
        shutil.rmtree(base, ignore_errors=True)


def _line(p: dict[str, Any]) -> str:
    """One log / table line of a mode."""
    mem = p["backend_memory"]
    return (
        f"| {p['mode']} | {p['server_idle_timeout']:g} s | {p['max_db_connections'] or '-'} "
        f"| {p['hosts']:,} | {p['cycles']:,} "
        f"| {p['cycles_per_s']:.1f} | {p['latency_p50_s'] * 1000:.0f} ms "
        f"| {p['latency_p99_s'] * 1000:.0f} ms "
        f"| {p['backends_per_cycle']:.2f} | {p['db_cpu_ms_per_cycle']:.1f} ms | {p['db_cpu_cores']:.2f} "
        f"| {p['pooler_cpu_ms_per_cycle']:.2f} ms | {p['server_connections_at_end']:,} "
        f"| {mem['own_mean'] / 2**20:.1f} MiB | {p['done_after_slot_max_s']:.1f} s "
        f"| {'yes' if p['keeps_up'] else 'NO'} | {p['loadavg'][0]:.1f} |"
    )


def table(res: dict[str, Any]) -> str:
    """The printed (and README) table, and each mode at 10,000 hosts every 60 s."""
    lines = [
        f"{res['hosts']:,} hosts x {res['peers_per_host']:,} peers every {res['interval_s']:g} s "
        f"(needs {res['hosts'] / res['interval_s']:.1f} cycles/s), each host its own role "
        f"(SCRAM), pgbouncer transaction mode, one pool per role; {res['rounds']} intervals per mode",
        "| mode | server_idle_timeout | max_db_connections | hosts | cycles | cycles/s | p50 | p99 "
        "| backends forked per cycle | PostgreSQL CPU per cycle | PostgreSQL cores | pgbouncer CPU per cycle "
        "| server connections at end | memory per backend (private + page tables) "
        "| committed after slot, max | keeps up | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(_line(m) for m in res["modes"]),
        "",
        "| mode at 10,000 hosts every 60 s | PostgreSQL CPU per cycle | PostgreSQL cores "
        "| pgbouncer cores | backends forked/s | server connections | their memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in res["modes"]:
        x = m["at_10000_hosts"]
        lines.append(
            f"| {m['mode']} | {x['postgres_cpu_ms_per_cycle']:.1f} ms | {x['postgres_cores']:.2f} "
            f"| {x['pgbouncer_cores']:.2f} "
            f"| {x['backends_forked_per_s']:.0f} | {x['server_connections']:,.0f} "
            f"| {x['backend_memory_bytes'] / 2**30:.1f} GiB |"
        )
    lines.append("")  # the notes after the table, so it stays one Markdown table
    for m in res["modes"]:
        if "connect_only_cpu_ms" in m:
            lines.append(f"{m['mode']}: a bare host session direct (fork, SCRAM, SELECT 1, exit) costs "
                         f"PostgreSQL {m['connect_only_cpu_ms']:.1f} ms of CPU" + (
                         f"; a new backend adds {m['new_backend_cpu_ms']:.1f} ms to a cycle"
                         if "new_backend_cpu_ms" in m else ""))  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The knobs; the defaults run the target's cycle rate (167/s) with 2,000 roles."""
    from tests.bench.fleet import common_args

    ap = argparse.ArgumentParser(prog="python -m tests.bench.fleet_roles", description=__doc__.split("\n")[0])
    common_args(ap, hosts=2000, peers=100, interval=12.0, what=", one login role each")
    ap.add_argument("--rounds", type=int, default=3, help="intervals per paced run")
    ap.add_argument("--slack", type=float, default=6.0,
                    help="keeps up: each cycle committed within this many s of its slot")  # fmt: skip
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="pgbouncer modes to run")
    ap.add_argument("--churn-idle-timeout", type=float, default=2.0, help="server_idle_timeout in churn mode")
    ap.add_argument("--cap", type=int, default=500, help="max_db_connections in cap mode")
    ap.add_argument("--connects", type=int, default=200, help="bare sessions timed after churn")
    args = ap.parse_args(argv)
    if args.churn_idle_timeout >= args.interval:
        ap.error("--churn-idle-timeout must be shorter than --interval (else nothing churns)")
    return args


def main(argv: list[str]) -> int:
    """Run, print the table, write the JSON."""
    from tests.bench.fleet import run_and_report

    return run_and_report("tests.bench.fleet_roles", argv, parse_args(argv), run, table)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
