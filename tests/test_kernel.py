"""The kernel source against real wireguard-go interfaces (tests/beds/wireguard.py).

Reference: ``wg show NAME dump`` parsed by parse_wg_dump. Broken daemons are real
unix-socket servers in a private socket_dir. Needs root and /dev/net/tun (skips otherwise).
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import socketserver
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.beds.wireguard import PeerSpec, WgBed, WgPair, genkey, random_key
from wgsyncd.config import KernelConfig
from wgsyncd.sources import kernel
from wgsyncd.sources.kernel import INTERFACE_FIELDS, PEER_FIELDS, parse_wg_dump
from wgsyncd.state import Interface, Source

pytestmark = pytest.mark.root


def only(*names: str) -> Callable[[str], bool]:
    """A want= filter: /run/wireguard is machine-wide, other tests' interfaces live there too."""
    return lambda name: name in names


def assert_same(got: Interface, ref: Interface, *, counters: bool = True) -> None:
    """Field-by-field equality with the dump reference (implementation is not in a dump)."""
    for f in INTERFACE_FIELDS:
        if f != "implementation":
            assert getattr(got, f) == getattr(ref, f), f"interface {got.name}: {f} differs"
    # wireguard-go keeps peers in a Go map: its order changes from one `get` to the next
    assert sorted(got.peers) == sorted(ref.peers), "peer set differs"
    for key, peer in got.peers.items():
        for f in PEER_FIELDS:
            if not counters and f in ("rx_bytes", "tx_bytes", "latest_handshake"):
                continue
            assert getattr(peer, f) == getattr(ref.peers[key], f), f"peer {key}: {f} differs"
        assert set(peer.provenance) == set(PEER_FIELDS)
        assert set(peer.provenance.values()) == {Source.KERNEL}


def read_one(backend: str, name: str, **kw: object) -> Interface:
    """read() one interface with ``backend``; fails the test on any SourceError."""
    result = kernel.read(KernelConfig(backend=backend, **kw), want=only(name))  # type: ignore[arg-type]
    assert result.errors == []
    assert list(result.interfaces) == [name]
    return result.interfaces[name]


MIXED = [
    PeerSpec(
        public_key=random_key(),
        preshared_key=random_key(),
        endpoint="192.0.2.10:51820",
        allowed_ips=("192.0.2.10/32", "fd00:1::/64", "fd00:2::5/128"),
        persistent_keepalive=25,
    ),
    PeerSpec(public_key=random_key(), endpoint="[fd00::abcd]:4500", allowed_ips=("198.51.100.0/24",)),
    PeerSpec(public_key=random_key()),  # no endpoint, no allowed IPs, no psk
]


@pytest.mark.parametrize("backend", ["uapi", "wg", "auto"])
@pytest.mark.parametrize("peers", [0, 1, 300, "mixed"])
def test_read_equals_wg_dump(wg_bed: WgBed, backend: str, peers: int | str) -> None:
    specs = MIXED if peers == "mixed" else peers
    iface = wg_bed.create(peers=specs, fwmark=0x42 if peers == 1 else 0)  # type: ignore[arg-type]
    other = wg_bed.create(peers=1)  # must be filtered out by want=
    got = read_one(backend, iface.name)
    ref = parse_wg_dump(iface.dump(), iface.name)[iface.name]
    assert_same(got, ref)
    assert got.implementation == "userspace"
    assert other.name not in kernel.read(KernelConfig(backend=backend), want=only(iface.name)).interfaces
    if peers == 300:
        assert len(got.peers) == 300
        assert any(p.preshared_key for p in got.peers.values())
        assert any(p.endpoint and p.endpoint.startswith("[") for p in got.peers.values())
        assert max(len(p.allowed_ips or ()) for p in got.peers.values()) >= 3
    if peers == "mixed":
        first, second, third = (got.peers[p.public_key or ""] for p in MIXED)
        assert first.allowed_ips == ("192.0.2.10/32", "fd00:1::/64", "fd00:2::5/128")
        assert first.persistent_keepalive == 25 and first.preshared_key
        assert second.endpoint == "[fd00::abcd]:4500" and second.preshared_key is None
        assert third.endpoint is None and third.allowed_ips == ()


def test_peer_changes_show_on_the_next_read(wg_bed: WgBed) -> None:
    iface = wg_bed.create(peers=list(MIXED))
    gone, kept = MIXED[0].public_key or "", MIXED[1].public_key or ""
    iface.remove_peer(gone)
    added, psk = random_key(), random_key()
    iface.set_peer(added, preshared_key=psk, endpoint="198.51.100.9:1", allowed_ips=("fd00:9::/64",))
    iface.set_peer(kept, allowed_ips=("192.0.2.77/32", "fd00:77::1/128"), persistent_keepalive=5)
    got = read_one("uapi", iface.name)
    assert gone not in got.peers
    assert got.peers[added].preshared_key is not None and got.peers[added].preshared_key.reveal() == psk
    assert got.peers[added].endpoint == "198.51.100.9:1"
    assert got.peers[kept].allowed_ips == ("192.0.2.77/32", "fd00:77::1/128")
    assert got.peers[kept].persistent_keepalive == 5
    assert_same(got, parse_wg_dump(iface.dump(), iface.name)[iface.name])


def test_handshake_and_counters_over_a_real_tunnel(wg_pair: WgPair) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    wg_pair.ping(3)
    got = read_one("uapi", wg_pair.a.name)
    ref = parse_wg_dump(wg_pair.a.dump(), wg_pair.a.name)[wg_pair.a.name]
    assert_same(got, ref, counters=False)
    (peer,) = got.peers.values()
    assert peer.latest_handshake is not None
    assert before - timedelta(seconds=2) <= peer.latest_handshake <= datetime.now(UTC)
    assert peer.latest_handshake == ref.peers[peer.public_key].latest_handshake
    assert peer.rx_bytes and peer.tx_bytes, "a ping moved no bytes?"
    assert peer.rx_bytes <= (ref.peers[peer.public_key].rx_bytes or 0)
    assert peer.endpoint == "192.0.2.2:51820"

    # restart (what the store's counter deltas must survive): counters and handshake reset
    wg_pair.a.restart()
    again = read_one("uapi", wg_pair.a.name)
    (peer2,) = again.peers.values()
    assert (peer2.rx_bytes, peer2.tx_bytes, peer2.latest_handshake) == (0, 0, None)
    assert again.private_key == got.private_key and again.public_key == got.public_key
    # and the restarted side is a working tunnel again (addresses and conf reapplied)
    wg_pair.ping(1)
    (peer3,) = read_one("uapi", wg_pair.a.name).peers.values()
    assert peer3.latest_handshake is not None and peer3.rx_bytes


def test_wg_backend_sees_the_handshake_too(wg_pair: WgPair) -> None:
    wg_pair.ping(2)
    got = read_one("wg", wg_pair.b.name)
    (peer,) = got.peers.values()
    assert peer.latest_handshake is not None and peer.rx_bytes and peer.tx_bytes


# ---------------------------------------------------------------- broken daemons


class FakeDaemon:
    """A unix-socket server answering ``get=1`` with a canned reply, run in a thread."""

    def __init__(self, path: str, reply: Callable[[socket.socket], None]) -> None:
        self.path = path

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                buf = b""
                while not buf.endswith(b"\n\n"):
                    chunk = self.request.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                reply(self.request)

        self.server = socketserver.ThreadingUnixStreamServer(path, Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def answer(text: str) -> Callable[[socket.socket], None]:
    return lambda conn: conn.sendall(text.encode())


def hang(conn: socket.socket) -> None:
    conn.recv(1)  # never answers; returns when the client gives up


def vanish(conn: socket.socket) -> None:
    conn.sendall(b"listen_port=51820\n")  # half a reply, then the daemon is gone
    conn.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def sock_dir(tmp_path: Path) -> Iterator[tuple[str, Callable[[str, Callable[[socket.socket], None]], None]]]:
    """A private socket_dir and a way to start fake daemons in it (all stopped afterwards)."""
    daemons: list[FakeDaemon] = []

    def start(name: str, reply: Callable[[socket.socket], None]) -> None:
        daemons.append(FakeDaemon(str(tmp_path / f"{name}.sock"), reply))

    yield str(tmp_path), start
    for d in daemons:
        d.close()


GOOD_PRIV = genkey()


def good_reply() -> str:
    return f"private_key={base64.b64decode(GOOD_PRIV).hex()}\nlisten_port=1234\nerrno=0\n\n"


@pytest.mark.parametrize(
    "behaviour, reason",
    [
        (answer("hello, I am not wireguard\n\n"), "line 1: not a key=value line"),
        (answer("listen_port=5\nerrno=19\n\n"), "errno=19"),
        (vanish, "connection closed before the reply was complete"),
        (hang, "no answer within 0.5 s"),
    ],
    ids=["garbage", "errno", "vanished", "hangs"],
)
def test_broken_socket_is_one_error_and_no_interface(
    sock_dir: tuple[str, Callable[..., None]],
    behaviour: Callable[[socket.socket], None],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    directory, start = sock_dir
    start("broken0", behaviour)
    start("good0", answer(good_reply()))
    caplog.set_level(logging.DEBUG)
    t0 = time.monotonic()
    result = kernel.read(KernelConfig(backend="uapi", socket_dir=directory, timeout=0.5))
    assert time.monotonic() - t0 < 3, "a hanging daemon held the read past its timeout"
    assert list(result.interfaces) == ["good0"], "the broken interface must not be returned half-read"
    (err,) = result.errors
    assert err.source == Source.KERNEL and err.interface == "broken0"
    assert err.where == f"broken0 ({directory}/broken0.sock)"
    assert reason in err.message
    assert result.interfaces["good0"].listen_port == 1234
    # the good interface's private key is nowhere in reprs, errors or logs
    assert GOOD_PRIV not in repr(result) and GOOD_PRIV not in caplog.text


def test_stale_socket_and_missing_dir_are_not_errors(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "gone0.sock"))
    stale.close()  # file stays, nobody listens: ECONNREFUSED, as after a crashed wireguard-go
    assert stat.S_ISSOCK(os.stat(tmp_path / "gone0.sock").st_mode)
    (tmp_path / "notasocket.sock").write_text("x")
    result = kernel.read(KernelConfig(backend="uapi", socket_dir=str(tmp_path)))
    assert (result.interfaces, result.errors) == ({}, [])
    result = kernel.read(KernelConfig(backend="uapi", socket_dir=str(tmp_path / "nope")))
    assert (result.interfaces, result.errors) == ({}, [])


def test_private_keys_never_in_repr_or_logs(wg_bed: WgBed, caplog: pytest.LogCaptureFixture) -> None:
    priv, psk = genkey(), random_key()
    iface = wg_bed.create(
        peers=[PeerSpec(public_key=random_key(), preshared_key=psk, allowed_ips=("192.0.2.7/32",))],
        private_key=priv,
    )
    caplog.set_level(logging.DEBUG)
    for backend in ("uapi", "wg", "auto"):
        result = kernel.read(KernelConfig(backend=backend), want=only(iface.name))
        got = result.interfaces[iface.name]
        assert got.private_key is not None and got.private_key.reveal() == priv
        for text in (repr(result), str(got), repr(got.peers), caplog.text):
            assert priv not in text and psk not in text


# ---------------------------------------------------------------- the `wg` backend's edges


def fake_wg(tmp_path: Path, body: str) -> str:
    """A real executable standing in for ``wg`` (to make it fail in ways real wg rarely does)."""
    path = tmp_path / "wg"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_wg_backend_unable_to_access_one_interface(tmp_path: Path) -> None:
    priv, pub = genkey(), random_key()
    body = (
        f"printf 'wgok\\t{priv}\\t{pub}\\t51820\\toff\\n'\n"
        "echo 'Unable to access interface wgbad: Protocol not supported' >&2\nexit 1"
    )
    result = kernel.read(
        KernelConfig(backend="wg", wg_command=fake_wg(tmp_path, body), socket_dir=str(tmp_path))
    )
    assert list(result.interfaces) == ["wgok"]
    assert result.interfaces["wgok"].implementation == "kernel"  # no socket for it in socket_dir
    (err,) = result.errors
    assert err.interface == "wgbad" and "Protocol not supported" in err.message


def test_wg_backend_timeout_and_missing_command(tmp_path: Path) -> None:
    slow = fake_wg(tmp_path, "exec sleep 30")
    t0 = time.monotonic()
    result = kernel.read(KernelConfig(backend="wg", wg_command=slow, timeout=0.5))
    assert time.monotonic() - t0 < 5
    (err,) = result.errors
    assert err.interface is None and "no answer within 0.5 s" in err.message
    result = kernel.read(KernelConfig(backend="wg", wg_command=str(tmp_path / "no-such-wg")))
    (err,) = result.errors
    assert err.interface is None and "command not found" in err.message


def test_wg_backend_garbage_output_fails_only_that_interface(tmp_path: Path) -> None:
    priv, pub = genkey(), random_key()
    body = f"printf 'wgok\\t{priv}\\t{pub}\\t51820\\toff\\nwgbad\\tgarbage\\tline\\t1\\t2\\n'"
    result = kernel.read(KernelConfig(backend="wg", wg_command=fake_wg(tmp_path, body)))
    assert list(result.interfaces) == ["wgok"]
    (err,) = result.errors
    assert err.interface == "wgbad" and "line 2" in err.message and "garbage" not in err.message


def test_disabled_source_is_unavailable() -> None:
    result = kernel.read(KernelConfig(enabled=False))
    assert result.available is False and result.interfaces == {}


def test_netlink_without_kernel_module_is_empty_not_an_error() -> None:
    """This machine has no WireGuard module: the netlink path must find nothing, quietly."""
    if Path("/sys/module/wireguard").exists():
        pytest.skip("the wireguard kernel module is loaded here")
    result = kernel.read(KernelConfig(backend="netlink"))
    assert (result.interfaces, result.errors) == ({}, [])


# ---------------------------------------------------------------- timing (printed, not asserted)


def test_timing_ten_thousand_peers(wg_bed: WgBed) -> None:
    t0 = time.monotonic()
    iface = wg_bed.create(peers=10_000)
    t_create = time.monotonic() - t0
    t0 = time.monotonic()
    got = read_one("uapi", iface.name)
    t_uapi = time.monotonic() - t0
    t0 = time.monotonic()
    text = subprocess.run(
        ["wg", "show", iface.name, "dump"], capture_output=True, text=True, check=True
    ).stdout
    t_wg = time.monotonic() - t0
    t0 = time.monotonic()
    ref = parse_wg_dump(text, iface.name)[iface.name]
    t_parse = time.monotonic() - t0
    t0 = time.monotonic()
    via_wg = read_one("wg", iface.name)
    t_wg_backend = time.monotonic() - t0
    assert len(got.peers) == 10_000
    assert_same(got, ref)
    assert_same(via_wg, ref)
    print(
        f"\n10,000 peers: setconf {t_create:.2f} s; read(uapi) {t_uapi:.3f} s; "
        f"`wg show dump` {t_wg:.3f} s + parse {t_parse:.3f} s; read(wg, all) {t_wg_backend:.3f} s"
    )


_PROBE = """
import json, sys
from wgsyncd.config import KernelConfig
from wgsyncd.sources import kernel
from wgsyncd.wire import netlink
kernel.MODULE_DIR = sys.argv[1]
asked, opened = [], netlink.NetlinkSocket.__init__
netlink.NetlinkSocket.__init__ = lambda self, *a: (asked.append(a), opened(self, *a))[1]
res = kernel.read(KernelConfig(backend="auto"), want=lambda n: n == sys.argv[2])
print(json.dumps({"names": sorted(res.interfaces), "errors": [str(e) for e in res.errors],
                  "netlink": bool(asked), "pyroute2": "pyroute2" in sys.modules}))
"""


@pytest.mark.parametrize("module", ["absent", "present"])
def test_auto_skips_netlink_when_the_kernel_has_no_wireguard(
    wg_bed: WgBed, tmp_path: Path, module: str
) -> None:
    """No /sys/module/wireguard: no kernel interface can exist, so no netlink socket is opened."""
    import json
    import sys

    iface = wg_bed.create(peers=2)
    sysmod = tmp_path / "module"
    (sysmod / ("wireguard" if module == "present" else "tun")).mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(sysmod), iface.name],
        capture_output=True, text=True, timeout=60, check=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    out = json.loads(proc.stdout)
    assert out["names"] == [iface.name] and out["errors"] == []  # read over UAPI either way
    assert out["netlink"] is (module == "present") and out["pyroute2"] is False  # reading needs no pyroute2


def test_peer_blocks_of_a_deleted_interface_are_forgotten(wg_bed: WgBed) -> None:
    from wgsyncd.sources import uapi

    iface = wg_bed.create(peers=3)
    blocks: dict = {}  # the daemon's memo.Memo.uapi

    def again() -> Interface:
        return kernel.read(KernelConfig(backend="uapi"), only(iface.name), blocks).interfaces[iface.name]

    first = again()
    assert all(again().peers[k] is p for k, p in first.peers.items())  # unchanged: same objects
    path = uapi.socket_path(KernelConfig().socket_dir, iface.name)
    assert len(blocks[path]) == 3
    kernel.read(KernelConfig(backend="uapi"), lambda name: name != iface.name, blocks)  # excluded
    assert path not in blocks
    again()
    iface.delete()
    kernel.read(KernelConfig(backend="uapi"), None, blocks)
    assert path not in blocks


def test_wg_backend_line_with_wrong_column_count_drops_the_whole_interface(tmp_path: Path) -> None:
    """A malformed line in the middle of an interface must not leave it half-read (first peer only)."""
    pub, p1, p2 = random_key(), random_key(), random_key()
    dump = tmp_path / "dump"
    dump.write_text(
        f"wg0\t(none)\t{pub}\t51820\toff\n"
        f"wg0\t{p1}\t(none)\t(none)\t10.0.0.2/32\t0\t0\t0\toff\n"
        "wg0\tcut\tshort\n"
        f"wg0\t{p2}\t(none)\t(none)\t10.0.0.3/32\t0\t0\t0\toff\n"
    )
    result = kernel.read(KernelConfig(backend="wg", wg_command=fake_wg(tmp_path, f"cat {dump}")))
    assert "wg0" not in result.interfaces
    (err,) = result.errors
    assert err.interface == "wg0" and "line 3" in err.message
