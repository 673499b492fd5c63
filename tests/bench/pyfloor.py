"""The Python floor: the least a Python agent with wgsyncd's libraries does on a first sync.

Run as a new process, as `wgsyncd sync` is: ``python tests/bench/pyfloor.py CONFIG DSN``.
It reads the same three sources the agent reads for the config's first interface
(`wg show IF dump`, the conf file split on "=" lines, wgrest's peer pages through
requests following ``Link``), joins them by public key into tuples and writes them with
psycopg (COPY into a staging table, one INSERT .. ON CONFLICT). It validates nothing,
keeps no provenance, drift, history, config version or signature.

Why it exists: the issue sets the first full sync against the shell floor
(tests/bench/floor.py). This measures, in the same run, how much of that gap is the
language and the fixed libraries themselves (interpreter start, importing psycopg and
requests, parsing three sources in Python) before wgsyncd does any of its own work.
It imports nothing from wgsyncd or tests on purpose.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from typing import Any

import psycopg
import requests

TABLE = """
CREATE TABLE IF NOT EXISTS pyfloor_peers (
    interface text NOT NULL, public_key text NOT NULL, name text, endpoint text,
    allowed_ips text, conf_allowed_ips text, latest_handshake bigint, rx_bytes bigint,
    tx_bytes bigint, updated_at timestamptz NOT NULL, PRIMARY KEY (interface, public_key))
"""
_STAGE = (
    "CREATE TEMP TABLE s (interface text, public_key text, name text, endpoint text, allowed_ips text, "
    "hs bigint, rx bigint, tx bigint, conf_allowed_ips text) ON COMMIT DROP"
)
_UPSERT = (
    "INSERT INTO pyfloor_peers SELECT interface, public_key, name, endpoint, allowed_ips, conf_allowed_ips, "
    "hs, rx, tx, now() FROM s ON CONFLICT (interface, public_key) DO UPDATE SET name = EXCLUDED.name, "
    "endpoint = EXCLUDED.endpoint, allowed_ips = EXCLUDED.allowed_ips, "
    "conf_allowed_ips = EXCLUDED.conf_allowed_ips, latest_handshake = EXCLUDED.latest_handshake, "
    "rx_bytes = EXCLUDED.rx_bytes, tx_bytes = EXCLUDED.tx_bytes, updated_at = now()"
)


def prepare(dsn: str) -> None:
    """Create the Python floor's table (once per database, outside the timed run)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TABLE)


def count_rows(dsn: str, ifname: str) -> int:
    """Rows the Python floor holds for ``ifname``: the check that it did the job."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pyfloor_peers WHERE interface = %s", (ifname,)).fetchone()
        return int(row[0]) if row else 0


def kernel(ifname: str) -> dict[str, list[str]]:
    """Peers from `wg show IF dump` (the shell floor's own read), by public key."""
    dump = subprocess.run(["wg", "show", ifname, "dump"], capture_output=True, text=True, check=True).stdout
    return {f[0]: f for f in (line.split("\t") for line in dump.splitlines()[1:])}


def conf(path: str) -> dict[str | None, dict[str, str]]:
    """Each [Peer] section's ``Key = Value`` lines, by PublicKey; no syntax check at all."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    peers: dict[str | None, dict[str, str]] = {}
    for section in text.split("[Peer]")[1:]:
        fields = {}
        for line in section.splitlines():
            key, _, value = line.partition("=")
            if value:
                fields[key.strip()] = value.strip()
        peers[fields.get("PublicKey")] = fields
    return peers


def wgrest(base: str, ifname: str) -> dict[str, dict[str, Any]]:
    """wgrest's peer pages (v1, 10,000 a page as wgsyncd asks), following ``Link: rel=next``."""
    url: str | None = f"{base}/v1/devices/{ifname}/peers/?per_page=10000&sort=pub_key"
    peers: dict[str, dict[str, Any]] = {}
    with requests.Session() as session:
        while url:
            resp = session.get(url, timeout=30)
            resp.raise_for_status()
            for peer in resp.json():
                peers[peer["public_key"]] = peer
            url = resp.links.get("next", {}).get("url")
            if url and url.startswith("/"):
                url = base + url
    return peers


def main(config_path: str, dsn: str) -> int:
    """Read, join, write; prints the row count."""
    with open(config_path, "rb") as fh:
        cfg = tomllib.load(fh)
    ifname = cfg["interfaces"][0]
    kern = kernel(ifname)
    files = conf(os.path.join(cfg["conf"]["directory"], f"{ifname}.conf"))
    rest = wgrest(cfg["wgrest"]["url"].rstrip("/"), ifname)
    rows = []
    for key, f in kern.items():
        c, w = files.get(key, {}), rest.get(key, {})
        rows.append((ifname, key, w.get("name"), f[2], f[3], f[4], f[5], f[6], c.get("AllowedIPs")))
    with psycopg.connect(dsn) as conn:
        conn.execute(_STAGE)
        with conn.cursor().copy("COPY s FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute(_UPSERT)
    print(len(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
