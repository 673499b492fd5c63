"""The floor: the crude script an operator would write instead of wgsyncd.

``wg show IF dump | tail -n +2 | psql`` with ``\\copy`` into a staging table and one
INSERT .. ON CONFLICT. It reads one source, diffs nothing, keeps no history and
rewrites every row every time: the cheapest thing that puts the kernel's peers in
PostgreSQL. wgsyncd must cost less than this while doing far more.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time

from tests.beds.postgres import PG_BIN

FLOOR_TABLE = """
CREATE TABLE IF NOT EXISTS floor_peers (
    interface text NOT NULL, public_key text NOT NULL, has_psk boolean NOT NULL,
    endpoint text, allowed_ips text[], latest_handshake timestamptz,
    rx_bytes bigint NOT NULL, tx_bytes bigint NOT NULL, keepalive integer,
    updated_at timestamptz NOT NULL, PRIMARY KEY (interface, public_key))
"""

_STAGE = (
    "CREATE TEMP TABLE s (public_key text, psk text, endpoint text, allowed_ips text, "
    "hs bigint, rx bigint, tx bigint, ka text) ON COMMIT DROP"
)
# the psk column is staged (the dump has it) but only its presence is kept
_INSERT = (
    "INSERT INTO floor_peers SELECT '{ifname}', public_key, psk <> '(none)', "
    "nullif(endpoint, '(none)'), string_to_array(nullif(allowed_ips, '(none)'), ','), "
    "CASE WHEN hs = 0 THEN NULL ELSE to_timestamp(hs) END, rx, tx, nullif(ka, 'off')::int, now() "
    "FROM s ON CONFLICT (interface, public_key) DO UPDATE SET has_psk = EXCLUDED.has_psk, "
    "endpoint = EXCLUDED.endpoint, allowed_ips = EXCLUDED.allowed_ips, "
    "latest_handshake = EXCLUDED.latest_handshake, rx_bytes = EXCLUDED.rx_bytes, "
    "tx_bytes = EXCLUDED.tx_bytes, keepalive = EXCLUDED.keepalive, updated_at = now()"
)


def floor_command(ifname: str, dsn: str) -> str:
    """The shell pipeline, exactly as run (psql -1: all in one transaction).

    psql does not interpolate variables in ``-c`` SQL, so the interface name goes in
    as a literal; interface names are checked to be plain ``[A-Za-z0-9_.-]`` first.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", ifname):
        raise ValueError(f"floor: interface name {ifname!r} is not a plain interface name")
    psql = [
        str(PG_BIN / "psql") if (PG_BIN / "psql").exists() else "psql",
        "-X",
        "-q",
        "-1",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        dsn,
        "-c",
        _STAGE,
        "-c",
        "\\copy s FROM pstdin",
        "-c",
        _INSERT.format(ifname=ifname),
    ]
    return f"wg show {shlex.quote(ifname)} dump | tail -n +2 | {shlex.join(psql)}"


def prepare(dsn: str) -> None:
    """Create the floor's table (once per database, outside the timed run)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(FLOOR_TABLE)


def run_floor(ifname: str, dsn: str) -> float:
    """Run the pipeline once; return its wall time. A failure names the step's stderr."""
    cmd = floor_command(ifname, dsn)
    t0 = time.monotonic()
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"floor script failed (exit {proc.returncode}): {proc.stderr.strip()[:300]}")
    return elapsed


def count_rows(dsn: str, ifname: str) -> int:
    """Rows the floor holds for ``ifname``: the check that it did the job."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM floor_peers WHERE interface = %s", (ifname,)).fetchone()
        return int(row[0]) if row else 0
