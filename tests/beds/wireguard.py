"""Test bed: real wireguard-go interfaces, each in its own network namespace.

``WgBed`` works outside pytest too (README demo, benchmark)::

    bed = WgBed()
    iface = bed.create(peers=300)          # wireguard-go in a fresh netns, 300 peers
    print(iface.dump())                    # `wg show NAME dump`
    bed.close()                            # kills every wireguard-go by PID, deletes netns

Names are unique machine-wide (``/run/wireguard/<name>.sock`` is shared by every
namespace), so tests read with ``want=`` filters on their own names. Each interface
lives in a namespace without routes, so endpoints and keepalives never send a packet
off the machine. Addresses: TEST-NET (RFC 5737) and ULA (fd00::/8) only.

Fixtures: ``wg_bed`` (a WgBed per test) and ``wg_pair`` (two peered interfaces over a
veth pair, ``.ping(count)`` makes a real handshake and traffic).
"""

from __future__ import annotations

import atexit
import base64
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tests.beds import unavailable

SOCKET_DIR = "/run/wireguard"
NAME_PREFIX = "wgt"
ENV = {**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
START_TIMEOUT = 10.0


class WgBedError(RuntimeError):
    """A bed step failed; says which command and why (stderr), never key material."""


def missing_reason() -> str | None:
    """Why this machine cannot run the bed, or None: root, /dev/net/tun and the tools."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, wireguard-go)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun for wireguard-go"
    for tool, pkg in (("wireguard-go", "wireguard-go"), ("wg", "wireguard-tools"), ("ip", "iproute2")):
        if shutil.which(tool) is None:
            return f"{tool} missing (apt install {pkg})"
    return None


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until true or the deadline; the error names what never happened."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not condition():
        if time.monotonic() > deadline:
            raise WgBedError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _run(*cmd: str, input_text: str | None = None, timeout: float = 60.0) -> str:
    """Run a tool, return stdout; failure raises WgBedError with the command and its stderr."""
    proc = subprocess.run(
        cmd, input=input_text, capture_output=True, text=True, timeout=timeout, env=ENV, check=False
    )
    if proc.returncode != 0:
        raise WgBedError(f"{' '.join(cmd[:6])}: exit {proc.returncode}: {proc.stderr.strip()[:500]}")
    return proc.stdout


def genkey() -> str:
    """A clamped X25519 private key, like ``wg genkey`` (without a process)."""
    raw = bytearray(os.urandom(32))
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    return base64.b64encode(bytes(raw)).decode()


def random_key() -> str:
    """32 random bytes in base64: a valid peer public key or preshared key for wg's purposes."""
    return base64.b64encode(os.urandom(32)).decode()


def pubkey(private: str) -> str:
    """The public key for ``private`` via ``wg pubkey`` (the reference implementation)."""
    return _run("wg", "pubkey", input_text=private + "\n").strip()


@dataclass
class PeerSpec:
    """One peer to configure; a None public key gets a random one."""

    public_key: str | None = None
    preshared_key: str | None = None
    endpoint: str | None = None
    allowed_ips: tuple[str, ...] = ()
    persistent_keepalive: int = 0


def generated_peers(count: int, *, psk_every: int = 2, allowed_per_peer: int = 3) -> list[PeerSpec]:
    """``count`` varied peers: psk on every ``psk_every``-th, v4/v6 endpoints, keepalives, several IPs.

    Allowed IPs are unique across peers (wg would move a duplicate): ULA /128 and /64s
    for everyone, a TEST-NET /32 for the first 762.
    """
    out = []
    v4 = [f"{net}.{host}/32" for net in ("192.0.2", "198.51.100", "203.0.113") for host in range(1, 255)]
    for i in range(count):
        hi, lo = divmod(i, 0x10000)
        ips = [f"fd00:{hi:x}:{lo:x}::1/128", f"fd10:{hi:x}:{lo:x}::/64", f"fd20:{hi:x}:{lo:x}::/48"]
        ips = ips[:allowed_per_peer]
        if i < len(v4):
            ips.insert(0, v4[i])
        if i % 3 == 0:
            endpoint = f"203.0.113.{i % 254 + 1}:{10000 + i % 50000}"
        elif i % 3 == 1:
            endpoint = f"[fd00::{i:x}]:{10000 + i % 50000}"
        else:
            endpoint = None
        out.append(
            PeerSpec(
                public_key=random_key(),
                preshared_key=random_key() if psk_every and i % psk_every == 0 else None,
                endpoint=endpoint,
                allowed_ips=tuple(ips),
                persistent_keepalive=25 if i % 4 == 0 else 0,
            )
        )
    return out


def make_conf(private_key: str, listen_port: int, fwmark: int, peers: list[PeerSpec]) -> str:
    """A ``wg setconf`` file (not wg-quick: no Address/DNS) for the interface and its peers."""
    lines = ["[Interface]", f"PrivateKey = {private_key}", f"ListenPort = {listen_port}"]
    if fwmark:
        lines.append(f"FwMark = {fwmark}")
    for p in peers:
        lines += ["", "[Peer]", f"PublicKey = {p.public_key or random_key()}"]
        if p.preshared_key:
            lines.append(f"PresharedKey = {p.preshared_key}")
        if p.endpoint:
            lines.append(f"Endpoint = {p.endpoint}")
        if p.allowed_ips:
            lines.append(f"AllowedIPs = {', '.join(p.allowed_ips)}")
        if p.persistent_keepalive:
            lines.append(f"PersistentKeepalive = {p.persistent_keepalive}")
    return "\n".join(lines) + "\n"


@dataclass
class WgIface:
    """One running wireguard-go interface in its own namespace; we own its PID."""

    name: str
    netns: str
    bed: WgBed
    proc: subprocess.Popen[bytes] | None = None
    addresses: list[str] = field(default_factory=list)  # re-added after restart()

    @property
    def pid(self) -> int:
        """wireguard-go's PID (``ip netns exec`` execs it, so it is the Popen's)."""
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    @property
    def socket_path(self) -> str:
        """The UAPI control socket wireguard-go created for this interface."""
        return f"{SOCKET_DIR}/{self.name}.sock"

    def _start(self) -> None:
        """Start ``wireguard-go -f`` in the namespace and wait for its control socket."""
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "wireguard-go", "-f", self.name],
            env=ENV,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        proc = self.proc

        def up() -> bool:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")[:500] if proc.stderr else ""
                raise WgBedError(f"wireguard-go {self.name} exited with {proc.returncode}: {err}")
            return os.path.exists(self.socket_path)

        wait_for(up, START_TIMEOUT, f"{self.socket_path} to appear")

    def wg(self, *args: str, input_text: str | None = None) -> str:
        """Run ``wg`` in the interface's namespace (the control socket is machine-wide anyway)."""
        return _run("ip", "netns", "exec", self.netns, "wg", *args, input_text=input_text)

    def ip(self, *args: str) -> str:
        """Run ``ip`` inside the interface's namespace."""
        return _run("ip", "-n", self.netns, *args)

    def dump(self) -> str:
        """``wg show NAME dump``: the reference text the kernel source must agree with."""
        return _run("wg", "show", self.name, "dump")

    def setconf(self, text: str) -> None:
        """``wg setconf NAME <file>``: replace the whole configuration (file is 0600, then removed)."""
        with tempfile.NamedTemporaryFile("w", dir=self.bed.tmpdir, suffix=".conf") as fh:
            fh.write(text)
            fh.flush()
            _run("wg", "setconf", self.name, fh.name, timeout=120)

    def showconf(self) -> str:
        """``wg showconf NAME``: the running configuration, private key included."""
        return _run("wg", "showconf", self.name)

    def set_peer(
        self,
        public_key: str,
        *,
        preshared_key: str | None = None,
        endpoint: str | None = None,
        allowed_ips: tuple[str, ...] | None = None,
        persistent_keepalive: int | None = None,
    ) -> None:
        """Add or change one peer with ``wg set``; the psk goes through stdin, not argv."""
        args = ["set", self.name, "peer", public_key]
        if preshared_key is not None:
            args += ["preshared-key", "/dev/stdin"]
        if endpoint is not None:
            args += ["endpoint", endpoint]
        if allowed_ips is not None:
            args += ["allowed-ips", ",".join(allowed_ips)]
        if persistent_keepalive is not None:
            args += ["persistent-keepalive", str(persistent_keepalive) if persistent_keepalive else "off"]
        _run("wg", *args, input_text=(preshared_key + "\n") if preshared_key else None)

    def remove_peer(self, public_key: str) -> None:
        """``wg set NAME peer KEY remove``."""
        _run("wg", "set", self.name, "peer", public_key, "remove")

    def _stop(self) -> None:
        """SIGTERM wireguard-go (it removes socket and tun), SIGKILL if it lingers; wait for both gone."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()
        # a killed wireguard-go leaves its socket behind: remove ours so nobody reads a stale one
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        wait_for(lambda: not self._link_exists(), 5, f"{self.name} tun device to go away")

    def _link_exists(self) -> bool:
        """Whether the tun device is still in the namespace."""
        return (
            subprocess.run(
                ["ip", "-n", self.netns, "link", "show", self.name], capture_output=True, check=False
            ).returncode
            == 0
        )

    def restart(self) -> None:
        """Kill and start wireguard-go again with the same conf: counters and handshakes reset."""
        saved = self.showconf()
        self._stop()
        self._start()
        self.setconf(saved)
        self._bring_up()

    def add_address(self, cidr: str) -> None:
        """Give the interface an address (kept across restart()) and bring it up."""
        self.addresses.append(cidr)
        self.ip("addr", "add", cidr, "dev", self.name)
        self.ip("link", "set", self.name, "up")

    def _bring_up(self) -> None:
        """Re-add remembered addresses after a restart."""
        for cidr in self.addresses:
            self.ip("addr", "add", cidr, "dev", self.name)
        if self.addresses:
            self.ip("link", "set", self.name, "up")

    def delete(self) -> None:
        """Stop wireguard-go and delete the namespace."""
        self._stop()
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)
        self.bed.ifaces.pop(self.name, None)


class WgBed:
    """Creates wireguard-go interfaces with unique names and removes all of them on close()."""

    def __init__(self, prefix: str = NAME_PREFIX) -> None:
        reason = missing_reason()
        if reason:
            raise WgBedError(reason)
        # prefix + 6 random hex + counter: unique machine-wide, <= 15 chars (IFNAMSIZ - 1)
        self.prefix = f"{prefix[:5]}{secrets.token_hex(3)}"
        self.counter = 0
        self.ifaces: dict[str, WgIface] = {}
        self.extra_netns: list[str] = []
        self.tmpdir = tempfile.mkdtemp(prefix="wgbed-")
        os.chmod(self.tmpdir, 0o700)
        self._closed = False
        atexit.register(self.close)

    def new_name(self) -> str:
        """A fresh interface name no other bed or run uses."""
        self.counter += 1
        name = f"{self.prefix}{self.counter}"
        assert len(name) <= 15, name
        return name

    def create(
        self,
        peers: int | list[PeerSpec] = 0,
        name: str | None = None,
        listen_port: int = 51820,
        fwmark: int = 0,
        conf_text: str | None = None,
        private_key: str | None = None,
    ) -> WgIface:
        """Start wireguard-go in a new namespace and configure it in one ``wg setconf``.

        ``peers`` is a count (varied generated peers) or explicit specs; ``conf_text``
        replaces the generated configuration entirely.
        """
        name = name or self.new_name()
        netns = f"ns-{name}"
        _run("ip", "netns", "add", netns)
        iface = WgIface(name=name, netns=netns, bed=self)
        self.ifaces[name] = iface
        _run("ip", "-n", netns, "link", "set", "lo", "up")
        iface._start()
        if conf_text is None:
            specs = generated_peers(peers) if isinstance(peers, int) else peers
            conf_text = make_conf(private_key or genkey(), listen_port, fwmark, specs)
        iface.setconf(conf_text)
        return iface

    def veth(self, a: WgIface, b: WgIface) -> tuple[str, str]:
        """Link two interfaces' namespaces with a veth pair (names unique too)."""
        va, vb = f"{self.prefix}va{self.counter}", f"{self.prefix}vb{self.counter}"
        _run("ip", "link", "add", va, "netns", a.netns, "type", "veth", "peer", "name", vb, "netns", b.netns)
        return va, vb

    def close(self) -> None:
        """Kill every wireguard-go by PID and delete every namespace; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for iface in list(self.ifaces.values()):
            try:
                iface.delete()
            except Exception as exc:  # keep cleaning the rest
                print(f"wg bed: cleanup of {iface.name} failed: {exc}")
        for ns in self.extra_netns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        atexit.unregister(self.close)


@dataclass
class WgPair:
    """Two wireguard-go interfaces peered over veth: a real handshake on demand."""

    a: WgIface
    b: WgIface
    a_key: str
    b_key: str
    a_addr: str = "198.51.100.1"
    b_addr: str = "198.51.100.2"

    def ping(self, count: int = 3) -> str:
        """Ping b from a through the tunnel: makes a handshake and moves bytes both ways."""
        return _run(
            "ip", "netns", "exec", self.a.netns, "ping", "-c", str(count), "-i", "0.2", "-W", "2",
            self.b_addr, timeout=30,
        )  # fmt: skip


def make_pair(bed: WgBed) -> WgPair:
    """Build the pair: veth 192.0.2.1/.2, tunnel 198.51.100.1/.2, each peer allowing the other's /32."""
    a_key, b_key = genkey(), genkey()
    a_pub, b_pub = pubkey(a_key), pubkey(b_key)
    a = bed.create(private_key=a_key)
    b = bed.create(private_key=b_key)
    va, vb = bed.veth(a, b)
    for iface, dev, addr in ((a, va, "192.0.2.1/24"), (b, vb, "192.0.2.2/24")):
        iface.ip("addr", "add", addr, "dev", dev)
        iface.ip("link", "set", dev, "up")
    a.set_peer(b_pub, endpoint="192.0.2.2:51820", allowed_ips=("198.51.100.2/32",))
    b.set_peer(a_pub, endpoint="192.0.2.1:51820", allowed_ips=("198.51.100.1/32",))
    a.add_address("198.51.100.1/24")
    b.add_address("198.51.100.2/24")
    return WgPair(a=a, b=b, a_key=a_key, b_key=b_key)


@pytest.fixture
def wg_bed() -> Iterator[WgBed]:
    """A WgBed for one test; every interface and namespace it made is gone afterwards."""
    reason = missing_reason()
    if reason:
        unavailable("wireguard-go", reason)
    bed = WgBed()
    try:
        yield bed
    finally:
        bed.close()


@pytest.fixture
def wg_pair(wg_bed: WgBed) -> WgPair:
    """Two peered wireguard-go interfaces in two namespaces over veth (TEST-NET addresses)."""
    return make_pair(wg_bed)
