"""The fault suite's test bed: real parts, owned by one scenario.

- a private PostgreSQL cluster (tests/beds/postgres.py), so killing it with
  `pg_ctl stop -m immediate` or SIGKILL hurts no other test;
- two wireguard-go interfaces peered over veth in two namespaces
  (tests/beds/wireguard.py); ``ping`` through the tunnel makes real handshakes
  and moves real bytes;
- the real daemon (`python -m wgsyncd run`) inside the first interface's
  namespace, so it sees the interface through netlink as well as its UAPI socket
  and its identity (ifindex) is real.

The ground truth for traffic is WireGuard itself: ``truth()`` is the sum, over every
incarnation of a counter the rig reset, of the last value ``wg show dump`` gave for
it, plus the current value.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.beds.postgres import PgCluster
from tests.beds.wireguard import WgBed, WgPair, make_pair, random_key
from wgsyncd import heartbeat
from wgsyncd.sources import kernel as kernel_source

REPO = Path(__file__).resolve().parents[2]


def poll(what: str, check: Any, timeout: float = 30.0, every: float = 0.05) -> Any:
    """Poll ``check`` until truthy (a condition with a deadline, never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Rig:
    """One host under test; see the module doc."""

    bed: WgBed
    interval: float = 0.5
    statement_timeout: float = 2.0
    extra_config: str = ""
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wgs-faults-", dir="/tmp")))
    pair: WgPair | None = None
    pg: PgCluster | None = None
    proc: subprocess.Popen[bytes] | None = None
    host_id: str = "fault-host"
    base: dict[str, list[int]] = field(default_factory=dict)  # peer -> [rx, tx] of dead incarnations
    daemon_runs: int = 0

    # -- setup ---------------------------------------------------------------------
    def start(self) -> Rig:
        """PostgreSQL, the wireguard-go pair, the config; the daemon is started separately."""
        os.chmod(self.tmp, 0o711)  # the postgres user must reach its data dir below it
        self.pg = PgCluster.start(self.tmp / "pg")
        self.pg.admin('CREATE DATABASE "faults"')
        self.dsn = self.pg.dsn("faults")
        self.pair = make_pair(self.bed)
        self.state_dir = self.tmp / "state"
        self.config = self.tmp / "wgsyncd.toml"
        self.config.write_text(
            f'host_id = "{self.host_id}"\ninterfaces = ["{self.a.name}"]\nlog_level = "info"\n'
            f'[database]\ndsn = "{self.dsn}"\nconnect_timeout = 2.0\nauto_migrate = true\n'
            f"statement_timeout = {self.statement_timeout}\n"
            '[kernel]\nbackend = "auto"\n[conf]\nenabled = false\n[wgrest]\nenabled = false\n'
            f"[daemon]\ninterval = {self.interval}\njitter = 0.0\nbackoff_initial = 0.5\n"
            f'backoff_max = 2.0\nstate_dir = "{self.state_dir}"\n' + self.extra_config
        )
        return self

    @property
    def a(self) -> Any:
        assert self.pair is not None
        return self.pair.a

    @property
    def b_pub(self) -> str:
        from tests.beds.wireguard import pubkey

        assert self.pair is not None
        return pubkey(self.pair.b_key)

    def close(self) -> None:
        """Stop the daemon and PostgreSQL (the wg bed is the fixture's)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.pg is not None:
            self.pg.stop("immediate")
        subprocess.run(["umount", "-l", str(self.tmp / "state")], capture_output=True, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- the daemon ------------------------------------------------------------------
    def start_daemon(self) -> None:
        """`wgsyncd run` in the interface's namespace, logging to daemon<N>.log."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WGSYNCD_", "NOTIFY_", "WATCHDOG_"))}
        env["PYTHONPATH"] = str(REPO)
        self.daemon_runs += 1
        self.log_path = self.tmp / f"daemon{self.daemon_runs}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.a.netns, sys.executable, "-m", "wgsyncd", "--config",
                 str(self.config), "run"],
                cwd=str(REPO), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def logs(self) -> str:
        """Everything every daemon run of this rig logged."""
        return "".join(p.read_text() for p in sorted(self.tmp.glob("daemon*.log")))

    def stop_daemon(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, float]:
        """Signal the daemon; (exit code, seconds to exit)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - t0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def beat(self) -> heartbeat.Heartbeat | None:
        try:
            return heartbeat.read(str(self.state_dir))
        except (OSError, ValueError, KeyError):
            return None

    def wait_cycles(
        self, n: int = 2, status: str | None = None, timeout: float = 60.0
    ) -> heartbeat.Heartbeat:
        """Wait until ``n`` more cycles ended (optionally: the last with ``status``)."""
        seen: list[float] = []

        def check() -> heartbeat.Heartbeat | None:
            beat = self.beat()
            if beat is not None and (not seen or beat.time != seen[-1]):
                seen.append(beat.time)
            if len(seen) > n and beat is not None and (status is None or beat.status == status):
                return beat
            if not self.alive():
                raise AssertionError(f"the daemon died; log:\n{self.logs()[-3000:]}")
            return None

        return poll(f"{n} cycles", check, timeout)

    def wait_synced(self, after: float, timeout: float = 60.0) -> float:
        """Wait for a cycle that ended ok after unix time ``after`` with an empty spool; when it ended."""

        def check() -> float | None:
            beat = self.beat()
            if not self.alive():
                raise AssertionError(f"the daemon died; log:\n{self.logs()[-3000:]}")
            if beat and beat.time > after and beat.status in ("ok", "partial") and beat.spool_depth == 0:
                return beat.time
            return None

        return poll("a synced cycle", check, timeout)

    # -- PostgreSQL ------------------------------------------------------------------
    def postmaster_pid(self) -> int:
        assert self.pg is not None
        return int((self.pg.data_dir / "postmaster.pid").read_text().splitlines()[0])

    def kill_pg(self, how: str) -> None:
        """``immediate``: pg_ctl stop -m immediate; ``sigkill``: SIGKILL the postmaster and its backends."""
        assert self.pg is not None
        if how == "immediate":
            self.pg.crash()
            return
        pid = self.postmaster_pid()
        children = self.server_pids()[1:]
        os.kill(pid, signal.SIGKILL)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)

    def server_pids(self) -> list[int]:
        """The postmaster and its children (from /proc: no procps needed)."""
        pid = self.postmaster_pid()
        out = [pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(stat.parent.name))
        return out

    def start_pg(self) -> None:
        """Start again; after a SIGKILL the old backends may take a moment to let go."""
        assert self.pg is not None

        def started() -> bool:
            try:
                self.pg.restart()  # type: ignore[union-attr]
                return True
            except Exception:
                return False

        poll("PostgreSQL to start again", started, timeout=60, every=0.3)

    def daemon_backend(self) -> tuple[int, str] | None:
        """(pid, state) of the daemon's server process, if connected."""
        try:
            rows = self.query("SELECT pid, state FROM pg_stat_activity WHERE application_name = 'wgsyncd'")
        except psycopg.Error:
            return None
        return (rows[0][0], rows[0][1]) if rows else None

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=3) as conn:
            return conn.execute(sql, params).fetchall()

    # -- WireGuard -------------------------------------------------------------------
    def counters(self) -> dict[str, tuple[int, int]]:
        """peer -> (rx, tx) as `wg show dump` has them now."""
        state = kernel_source.parse_wg_dump(self.a.dump(), self.a.name)
        return {k: (p.rx_bytes or 0, p.tx_bytes or 0) for k, p in state[self.a.name].peers.items()}

    def ping(self, count: int = 5) -> None:
        assert self.pair is not None
        self.pair.ping(count)

    def _bank(self, peers: list[str] | None = None) -> None:
        """Remember the counters of incarnations about to die."""
        for peer, (rx, tx) in self.counters().items():
            if peers is None or peer in peers:
                acc = self.base.setdefault(peer, [0, 0])
                acc[0] += rx
                acc[1] += tx

    def restart_interface(self) -> None:
        """Kill and start wireguard-go (a new TUN device, new ifindex): every counter restarts."""
        self._bank()
        self.a.restart()

    def readd_peer(self, wait: Any = None) -> None:
        """Remove the tunnel peer and add it back (its counters restart); ``wait()`` in between."""
        self._bank([self.b_pub])
        self.a.remove_peer(self.b_pub)
        if wait is not None:
            wait()
        self.a.set_peer(self.b_pub, endpoint="192.0.2.2:51820", allowed_ips=("198.51.100.2/32",))

    def transient_peer(self) -> str:
        """Add a peer nobody talks to; the caller removes it."""
        key = random_key()
        self.a.set_peer(key, allowed_ips=("10.77.0.1/32",))
        return key

    def truth(self, peer: str) -> tuple[int, int]:
        """All bytes WireGuard counted for ``peer`` over every incarnation."""
        rx, tx = self.counters().get(peer, (0, 0))
        acc = self.base.get(peer, [0, 0])
        return acc[0] + rx, acc[1] + tx

    # -- the database's view ----------------------------------------------------------------
    def db_totals(self, peer: str) -> tuple[int, int, int, int]:
        """(rx_total, tx_total, sum rx deltas, sum tx deltas) for ``peer``."""
        rows = self.query(
            "SELECT s.rx_total, s.tx_total, (SELECT coalesce(sum(rx_delta), 0) FROM peer_traffic t "
            "WHERE t.host_id = s.host_id AND t.interface = s.interface AND t.public_key = s.public_key), "
            "(SELECT coalesce(sum(tx_delta), 0) FROM peer_traffic t WHERE t.host_id = s.host_id AND "
            "t.interface = s.interface AND t.public_key = s.public_key) FROM peer_stats s "
            "WHERE s.host_id = %s AND s.public_key = %s",
            (self.host_id, peer),
        )
        return tuple(int(v) for v in rows[0]) if rows else (0, 0, 0, 0)  # type: ignore[return-value]

    def rows_match_dump(self) -> bool:
        """Live peer rows and their counters are exactly what `wg show dump` has (after a quiet cycle)."""
        want = self.counters()
        rows = self.query(
            "SELECT p.public_key, s.rx_bytes, s.tx_bytes FROM peers p LEFT JOIN peer_stats s USING "
            "(host_id, interface, public_key) WHERE p.host_id = %s AND p.removed_at IS NULL",
            (self.host_id,),
        )
        return {r[0]: (r[1], r[2]) for r in rows} == want

    def versions(self) -> list[set[str]]:
        """Each config version's peer set, in order."""
        rows = self.query(
            "SELECT doc FROM config_versions WHERE host_id = %s ORDER BY version", (self.host_id,)
        )
        out = []
        for (doc,) in rows:
            iface = doc["interfaces"].get(self.a.name, {"peers": []})
            out.append({p["public_key"] for p in iface["peers"]})
        return out

    def duplicate_cycles(self) -> int:
        """sync_status rows sharing a sync id (a cycle written twice)."""
        rows = self.query(
            "SELECT count(*) - count(DISTINCT sync_id) FROM sync_status "
            "WHERE host_id = %s AND status <> 'failed'",
            (self.host_id,),
        )
        return int(rows[0][0])

    def partial_cycles(self) -> int:
        """Committed cycles whose rows are incomplete: a hosts.last_sync_id without its status row."""
        rows = self.query(
            "SELECT count(*) FROM hosts h WHERE h.host_id = %s AND NOT EXISTS (SELECT 1 FROM sync_status s "
            "WHERE s.host_id = h.host_id AND s.sync_id = h.last_sync_id)",
            (self.host_id,),
        )
        return int(rows[0][0])

    def first_line(self, *needles: str) -> str:
        """The first log line containing any of ``needles`` (what an operator sees)."""
        for line in self.logs().splitlines():
            if any(n in line for n in needles):
                try:
                    return str(json.loads(line).get("message", line))
                except ValueError:
                    parts = line.split(None, 3)
                    return parts[-1] if len(parts) == 4 else line
        return ""
