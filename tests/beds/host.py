"""One simulated VPN host for the end-to-end tests, the demo and the bench.

A Host owns wireguard-go interfaces (from the wireguard bed), their wg-quick conf files,
a wgsyncd config file and runs the installed CLI in a subprocess, the way an operator
runs it. The reference for "what is running" is `wg show NAME dump`, parsed here
independently of wgsyncd's own parser.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.beds.wireguard import PeerSpec, generated_peers, genkey
from wgsyncd import store


@dataclass
class DumpPeer:
    public_key: str
    preshared_key: str | None
    endpoint: str | None
    allowed_ips: list[str]
    latest_handshake: int
    rx: int
    tx: int
    keepalive: int


def parse_dump(text: str) -> tuple[list[str], dict[str, DumpPeer]]:
    """`wg show IF dump`: first line the interface, then one tab-separated line per peer."""
    lines = text.strip("\n").split("\n")
    head = lines[0].split("\t")
    peers = {}
    for line in lines[1:]:
        pub, psk, ep, ips, hs, rx, tx, ka = line.split("\t")
        peers[pub] = DumpPeer(
            pub,
            None if psk == "(none)" else psk,
            None if ep == "(none)" else ep,
            [] if ips == "(none)" else ips.split(","),
            int(hs),
            int(rx),
            int(tx),
            0 if ka == "off" else int(ka),
        )
    return head, peers


def wg_quick_conf(
    private_key: str, port: int, specs: list[PeerSpec], disabled: PeerSpec | None = None
) -> str:
    """A wg-quick file with the fields operators use: hooks with commas, names, a disabled peer."""
    out = [
        "# office VPN, managed by hand",
        "[Interface]",
        "Address = 10.99.0.1/24, fd99::1/64",
        "DNS = 192.0.2.53, corp.example",
        "MTU = 1420",
        f"ListenPort = {port}",
        f"PrivateKey = {private_key}",
        "PostUp = iptables -A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT",
        "PostDown = iptables -D INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT",
    ]
    for p in specs:
        out += ["", f"# Name = {peer_name(p.public_key)}", "[Peer]", f"PublicKey = {p.public_key}"]
        if p.preshared_key:
            out.append(f"PresharedKey = {p.preshared_key}")
        if p.endpoint:
            out.append(f"Endpoint = {p.endpoint}")
        out.append(f"AllowedIPs = {', '.join(p.allowed_ips)}")
        if p.persistent_keepalive:
            out.append(f"PersistentKeepalive = {p.persistent_keepalive}")
    if disabled:
        out += ["", "#! [Peer]", f"#! PublicKey = {disabled.public_key}", "#! AllowedIPs = 10.99.9.9/32"]
    return "\n".join(out) + "\n"


def peer_name(public_key: str) -> str:
    """A stable name per peer, as an operator would put in a comment."""
    return "peer-" + "".join(c for c in public_key if c.isalnum())[:8]


def strip(conf: Path) -> str:
    """What wg-quick would hand to `wg setconf`: the real oracle."""
    return subprocess.run(["wg-quick", "strip", str(conf)], check=True, capture_output=True, text=True).stdout


class Host:
    """One simulated VPN host: its interfaces, conf dir, wgrest, config file and the CLI."""

    def __init__(self, tmp: Path, wg_bed, dsn: str, host_id: str, wgrest_url: str | None = None):
        self.tmp, self.bed, self.dsn, self.host_id = tmp, wg_bed, dsn, host_id
        self.conf_dir = tmp / f"etc-wireguard-{host_id}"
        self.conf_dir.mkdir(mode=0o700)
        self.wgrest_url = wgrest_url
        self.ifaces: dict[str, object] = {}
        self.specs: dict[str, list[PeerSpec]] = {}
        self.keys: dict[str, str] = {}
        self.disabled: dict[str, PeerSpec | None] = {}
        self.config = tmp / f"wgsyncd-{host_id}.toml"
        # the host's own state directory (signing key, last signed version), not /var/lib/wgsyncd
        self.state_dir = tmp / f"state-{host_id}"

    psk_every = 2  # every n-th generated peer has a preshared key

    def add_interface(self, peers: int, disabled: PeerSpec | None = None) -> str:
        iface = self.bed.create()
        name = iface.name
        self.ifaces[name] = iface
        self.specs[name] = generated_peers(peers, psk_every=self.psk_every)
        self.keys[name] = genkey()
        self.disabled[name] = disabled
        self.apply(name)
        return name

    def conf_text(self, name: str) -> str:
        """The wg-quick file for ``name`` (subclasses add keys)."""
        return wg_quick_conf(self.keys[name], 51820, self.specs[name], self.disabled[name])

    def apply(self, name: str) -> None:
        """Write the conf file and make the interface run exactly what wg-quick would give it."""
        conf = self.conf_dir / f"{name}.conf"
        conf.write_text(self.conf_text(name))
        conf.chmod(0o600)
        self.ifaces[name].setconf(strip(conf))

    def write_config(self, extra: str = "") -> None:
        names = ", ".join(f'"{n}"' for n in self.ifaces)
        wgrest = (
            f'[wgrest]\nurl = "{self.wgrest_url}"\ntimeout = 2.0\noptional = false\ndata_dir = ""\n'
            if self.wgrest_url
            else "[wgrest]\nenabled = false\n"
        )
        self.config.write_text(
            textwrap.dedent(f"""\
                host_id = "{self.host_id}"
                interfaces = [{names}]
                [database]
                dsn = "{self.dsn}"
                auto_migrate = true
                connect_timeout = 5.0
                [kernel]
                backend = "auto"
                [conf]
                directory = "{self.conf_dir}"
            """)
            + wgrest
            + extra
        )

    def wgsyncd(
        self, *args: str, check: bool = True, input: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        extra = env or {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("WGSYNCD_")}
        env["WGSYNCD_DAEMON_STATE_DIR"] = str(self.state_dir)
        env.update(extra)
        proc = subprocess.run(
            [sys.executable, "-m", "wgsyncd", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            input=input,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"wgsyncd {args} exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc


def peers_by_key(dsn: str, host_id: str) -> dict[tuple[str, str], store.PeerRow]:
    with psycopg.connect(dsn) as conn:
        return {(r.interface, r.public_key): r for r in store.load_peers(conn, host_id)}
