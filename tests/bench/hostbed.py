"""One simulated VPN host for the single-host benchmark: real wireguard-go, conf file, wgrest.

Why its own peer set instead of ``generated_peers``: the steady cycle needs counters
that change for real, and wireguard-go's counters only move with traffic. Every peer
here routes a 2001:db8 (documentation range) /64 through the interface, and two in
three peers have an endpoint in a sink namespace behind a veth. Sending one UDP
packet to a peer's /64 makes wireguard-go send a handshake initiation to the peer's
endpoint: its tx counter grows by 148 bytes now and again at every retry (about
every 5 s) -- a real counter change, made by real packets that never leave our two
namespaces.
"""

from __future__ import annotations

import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.beds.host import wg_quick_conf
from tests.beds.postgres import PgCluster
from tests.beds.wgrest_server import ServerBox, make_wgrest_server
from tests.beds.wireguard import PeerSpec, WgBed, WgIface, _run, genkey, make_conf, random_key

SINK_V4 = "192.0.2.254"
SINK_V6 = "2001:db8:ffff::fe"
PEER_NET = "2001:db8:1::/48"  # peer i routes 2001:db8:1:<i>::/64

# runs inside the host's namespace: one UDP datagram to each address on stdin
_SENDER = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n"
    "for a in sys.stdin.read().split(): s.sendto(b'x',(a,9))\n"
)


def bench_peers(n: int) -> list[PeerSpec]:
    """``n`` peers like a real VPN host's: psk on half, endpoints on two thirds, several allowed IPs."""
    out = []
    for i in range(n):
        ips = [f"2001:db8:1:{i:x}::/64"]
        if i < 254:
            ips.insert(0, f"198.51.100.{i + 1}/32")
        elif i < 508:
            ips.insert(0, f"203.0.113.{i - 253}/32")
        if i % 3 == 0:
            endpoint = f"{SINK_V4}:{20000 + i % 40000}"
        elif i % 3 == 1:
            endpoint = f"[{SINK_V6}]:{20000 + i % 40000}"
        else:
            endpoint = None
        out.append(
            PeerSpec(
                public_key=random_key(),
                preshared_key=random_key() if i % 2 == 0 else None,
                endpoint=endpoint,
                allowed_ips=tuple(ips),
                # no keepalive: with any keepalive peer, wireguard-go keeps handshaking with
                # every peer that has an endpoint (nobody answers here), so nothing is ever idle
                persistent_keepalive=0,
            )
        )
    return out


def pick_active(n: int, fraction: float = 0.1) -> list[int]:
    """Indices of ``fraction`` of the peers, spread evenly over those with an endpoint."""
    eligible = [i for i in range(n) if i % 3 != 2]
    want = max(1, int(n * fraction))
    step = len(eligible) / want
    return [eligible[int(k * step)] for k in range(want)]


def parse_dump_counters(text: str) -> dict[str, tuple[int, int, int]]:
    """public key -> (handshake, rx, tx) from ``wg show IF dump``; order there is not stable."""
    out = {}
    for line in text.splitlines()[1:]:
        cols = line.split("\t")
        out[cols[0]] = (int(cols[4]), int(cols[5]), int(cols[6]))
    return out


@dataclass
class BenchHost:
    """A wireguard-go interface with ``n`` peers, its wg-quick conf, a wgrest server, a config file."""

    base: Path
    cluster: PgCluster
    bed: WgBed
    n: int
    iface: WgIface | None = None
    wgrest: ServerBox | None = None
    specs: list[PeerSpec] = field(default_factory=list)
    conf_dir: Path | None = None
    host_id: str = "bench-host"

    @property
    def name(self) -> str:
        """The interface name (unique on the machine)."""
        assert self.iface is not None
        return self.iface.name

    def setup(self) -> None:
        """Start everything; the conf file, the running interface and wgrest hold the same peers."""
        self.specs = bench_peers(self.n)
        key = genkey()
        self.iface = self.bed.create(conf_text=make_conf(key, 51820, 0, self.specs))
        self._plumb()
        self.conf_dir = self.base / f"etc-wireguard-{self.n}"
        self.conf_dir.mkdir(mode=0o700)
        conf = self.conf_dir / f"{self.name}.conf"
        conf.write_text(wg_quick_conf(key, 51820, self.specs))
        conf.chmod(0o600)
        from wgsyncd.sources import kernel

        self.wgrest = make_wgrest_server("v1")
        self.wgrest.load_state(kernel.parse_wg_dump(self.iface.dump(), self.name).values())
        # wgrest v1 reports the link's addresses, which wg-quick set from the conf
        self.wgrest.devices[self.name].addresses = ["10.99.0.1/24", "fd99::1/64"]

    def _plumb(self) -> None:
        """A veth to a sink namespace (the endpoints live there) and a route for the peers' /64s."""
        assert self.iface is not None
        ns, sink = self.iface.netns, f"{self.iface.netns}k"
        _run("ip", "netns", "add", sink)
        self.bed.extra_netns.append(sink)
        a, b = f"{self.name}a"[-15:], f"{self.name}b"[-15:]
        _run("ip", "link", "add", a, "netns", ns, "type", "veth", "peer", "name", b, "netns", sink)
        for netns, dev, v4, v6 in (
            (ns, a, "192.0.2.1/24", "2001:db8:ffff::1/64"),
            (sink, b, f"{SINK_V4}/24", f"{SINK_V6}/64"),
        ):
            _run("ip", "-n", netns, "addr", "add", v4, "dev", dev)
            _run("ip", "-n", netns, "addr", "add", v6, "dev", dev, "nodad")
            _run("ip", "-n", netns, "link", "set", dev, "up")
        self.iface.ip("addr", "add", "2001:db8:2::1/128", "dev", self.name, "nodad")
        # a long tun queue: the steady phase sends one datagram to each of up to 5,000 peers at once
        self.iface.ip("link", "set", self.name, "txqueuelen", "10000", "up")
        self.iface.ip("-6", "route", "add", PEER_NET, "dev", self.name)

    def write_config(self, path: Path, dsn: str) -> Path:
        """A wgsyncd config reading all three sources for this interface into ``dsn``."""
        assert self.wgrest is not None and self.conf_dir is not None
        # the bench's own state dir (signing key, sync cache): never /var/lib/wgsyncd,
        # which another bench or a real agent on the machine may be using
        state_dir = path.parent / f"{path.stem}-state"
        state_dir.mkdir(mode=0o700, exist_ok=True)
        path.write_text(
            textwrap.dedent(f"""\
                host_id = "{self.host_id}"
                interfaces = ["{self.name}"]
                log_level = "warning"
                [database]
                dsn = "{dsn}"
                connect_timeout = 5.0
                statement_timeout = 120.0
                [kernel]
                backend = "auto"
                [conf]
                directory = "{self.conf_dir}"
                [wgrest]
                url = "{self.wgrest.url}"
                timeout = 30.0
                optional = false
                data_dir = ""
                [daemon]
                state_dir = "{state_dir}"
            """)
        )
        return path

    def counters(self) -> dict[str, tuple[int, int, int]]:
        """Every peer's (handshake, rx, tx) as wg shows them now."""
        assert self.iface is not None
        return parse_dump_counters(self.iface.dump())

    def poke(self, indices: list[int]) -> None:
        """One datagram to each chosen peer's /64: wireguard-go starts (or keeps) handshaking."""
        assert self.iface is not None
        addrs = "\n".join(f"2001:db8:1:{i:x}::1" for i in indices)
        _run("ip", "netns", "exec", self.iface.netns, "python3", "-c", _SENDER, input_text=addrs)

    def wait_changed(
        self, indices: list[int], since: dict[str, tuple[int, int, int]], timeout: float = 60.0
    ) -> dict[str, tuple[int, int, int]]:
        """Poll until every chosen peer's counters differ from ``since``; return the new counters.

        Peers that have not moved are poked again about once a second: a burst of
        thousands of datagrams can overflow the tun queue, and a dropped one starts nothing.
        """
        keys = {self.specs[i].public_key: i for i in indices}
        deadline = time.monotonic() + timeout
        next_poke = time.monotonic() + 1.0
        delay = 0.05
        while True:
            now = self.counters()
            still = [i for k, i in keys.items() if now[k] == since.get(k)]
            if not still:
                return now
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{len(still)} of {len(keys)} peers' counters did not move in {timeout:g} s"
                )
            if time.monotonic() >= next_poke:
                self.poke(still)
                next_poke = time.monotonic() + 1.0
            time.sleep(delay)  # polling a condition with a deadline, not a fixed wait
            delay = min(delay * 1.5, 0.25)

    def mirror_counters(self, counters: dict[str, tuple[int, int, int]]) -> None:
        """wgrest serves the kernel's live counters; keep the bed's copy equal to wg's."""
        assert self.wgrest is not None
        dev = self.wgrest.devices[self.name]
        with self.wgrest.lock:
            for pk, (_hs, rx, tx) in counters.items():
                peer = dev.peers.get(pk)
                if peer is not None:
                    peer.rx, peer.tx = rx, tx

    def close(self) -> None:
        """Stop wgrest (the WgBed and cluster belong to the caller)."""
        if self.wgrest is not None:
            self.wgrest.stop()
            self.wgrest = None
