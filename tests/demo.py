"""`make demo`: wgsyncd's main job on this machine with nothing set up beforehand.

Starts a throwaway PostgreSQL, a wireguard-go interface with peers (in its own
network namespace), writes its wg-quick conf file, starts a wgrest server, then
runs the real CLI: a recovery key, `wgsyncd sync` twice (the second writes nothing),
`wgsyncd status`, `drift`, `history`, a restore of the conf file from the database
(byte-identical), and shows the rows. Everything is removed at the end.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import psycopg

from tests.beds.host import Host
from tests.beds.postgres import PgCluster
from tests.beds.wgrest_server import make_wgrest_server
from tests.beds.wireguard import WgBed, missing_reason


def run(host: Host, *args: str) -> None:
    """Run one wgsyncd command and show it like a terminal would."""
    print(f"\n$ wgsyncd {' '.join(args)}", flush=True)
    proc = host.wgsyncd(*args, check=False)
    sys.stdout.write(proc.stdout)
    sys.stdout.write(proc.stderr)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"wgsyncd {' '.join(args)} exited {proc.returncode}")


def show_rows(dsn: str) -> None:
    """A few rows of each table, the way psql would show them."""
    queries = {
        "interfaces": "SELECT host_id, name, listen_port, addresses, mtu, post_up, version FROM interfaces",
        "peers (first 5)": "SELECT interface, left(public_key, 12) AS peer, name, allowed_ips, endpoint,"
        " persistent_keepalive AS ka, version FROM peers ORDER BY interface, name LIMIT 5",
        "server_keys": "SELECT interface, public_key, left(fingerprint, 16) AS fp FROM server_keys",
        "sync_status": "SELECT started_at, status, interfaces, peers FROM sync_status ORDER BY id",
    }
    with psycopg.connect(dsn) as conn:
        for title, sql in queries.items():
            cur = conn.execute(sql)
            cols = [d.name for d in cur.description]
            print(f"\n-- {title}\n" + " | ".join(cols))
            for row in cur:
                print(" | ".join(str(v) for v in row))


def main() -> None:
    """Set up the throwaway world, run the CLI against it, tear it down."""
    reason = missing_reason()
    if reason:
        raise SystemExit(f"demo needs root and wireguard-go: {reason}")
    base = Path(tempfile.mkdtemp(prefix="wgsyncd-demo-"))
    os.chmod(base, 0o755)
    cluster = PgCluster.start(base / "db")
    bed = WgBed()
    wgrest = make_wgrest_server("v1")
    try:
        host = Host(base, bed, cluster.create_database("wgsyncd"), "demo-host")
        name = host.add_interface(25)
        from wgsyncd.sources import kernel

        wgrest.load_state(kernel.parse_wg_dump(host.ifaces[name].dump(), name).values())
        # wgrest reports the link's addresses; wg-quick would have set the conf's
        wgrest.devices[name].addresses = ["10.99.0.1/24", "fd99::1/64"]
        host.wgrest_url = wgrest.url
        host.write_config()
        run(host, "keys", "init-recovery", str(base / "recovery.key"))  # the operator, once, offline
        public = (base / "recovery.key").read_text().split("public = ")[1].split()[0]
        host.config.write_text(f'recovery_public_key = "{public}"\n' + host.config.read_text())
        print(f"demo: PostgreSQL in {base / 'db'}, wireguard-go interface {name} with 25 peers,")
        print(f"      conf {host.conf_dir / (name + '.conf')}, wgrest at {wgrest.url}, config {host.config}")
        run(host, "sync")
        run(host, "sync")
        run(host, "status")
        run(host, "drift")
        run(host, "history")
        # the operator pins the host's signing key once (out of band); restore trusts only pins
        verify_key = host.wgsyncd("keys", "show-signing").stdout.split()[1]
        trusted = str(base / "trusted-keys")
        run(host, "keys", "trust", host.host_id, verify_key, "--trusted-keys", trusted)
        restored = base / "restored"
        run(host, "restore", "--recovery-key", str(base / "recovery.key"), "--trusted-keys", trusted,
            "--to-dir", str(restored))  # fmt: skip
        conf = host.conf_dir / f"{name}.conf"
        same = (restored / conf.name).read_bytes() == conf.read_bytes()
        print(f"restored {conf.name} byte-identical to the original: {same}")
        show_rows(host.dsn)
        print(f"\n$ wg show {name} dump | head -3")
        print("\n".join(host.ifaces[name].dump().splitlines()[1:4]).replace("\t", "  "))
    finally:
        wgrest.stop()
        bed.close()
        cluster.stop("fast")
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
