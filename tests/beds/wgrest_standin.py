#!/usr/bin/python3
"""The compose test's wgrest stand-in: ``/wgrest --conf FILE``, as wgrest v1 is started.

Installed as /wgrest in the stand-in image (tests/beds/compose/wgrest-standin.Containerfile),
so compose.yaml's own wgrest entrypoint (token from the secret file into
WGREST_STATIC_AUTH_TOKEN, then ``exec /wgrest --conf ...``) runs it unchanged. It reads
``listen`` and ``data-dir`` from the TOML config like wgrest does, and serves, through the
spec-faithful test server (wgrest_server.py), every interface with a conf file in
/etc/wireguard, read at start from its wireguard-go control socket in /run/wireguard
(the real wgrest reads the kernel through wgctrl, which reads these sockets as well).
The socket is parsed here, not with wgsyncd's own reader: a bug there must not show up
identically in the kernel source and in the wgrest answers the test compares it with.
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import socket
import sys
import threading
import tomllib
from datetime import UTC, datetime
from pathlib import Path

try:  # imported by the tests
    from tests.beds.wgrest_server import FakeDevice, FakePeer, ServerBox
except ImportError:  # run as a script: beside wgrest_server.py, or /wgrest in the image
    sys.path.insert(0, "/opt/wgrest-standin")
    from wgrest_server import FakeDevice, FakePeer, ServerBox  # type: ignore[no-redef]

ZERO_KEY_HEX = "0" * 64


def uapi_get(sock_path: Path) -> list[tuple[str, str]]:
    """The ``key=value`` lines a wireguard-go control socket answers to ``get=1``."""
    data = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(sock_path))
        sock.sendall(b"get=1\n\n")
        while not data.endswith(b"\n\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    pairs = [tuple(line.split("=", 1)) for line in data.decode().splitlines() if "=" in line]
    errno = dict(pairs).get("errno", "0")
    if errno != "0":
        raise OSError(f"{sock_path}: get=1 answered errno={errno}")
    return pairs  # type: ignore[return-value]


def _b64(hex_key: str) -> str:
    """A hex key (UAPI) as base64 (wgrest's JSON)."""
    return base64.b64encode(bytes.fromhex(hex_key)).decode()


def _apply(peer: FakePeer, key: str, value: str) -> None:
    """One UAPI peer line onto the served peer."""
    if key == "preshared_key" and value != ZERO_KEY_HEX:
        peer.preshared_key = _b64(value)
    elif key == "endpoint":
        peer.endpoint = value
    elif key == "allowed_ip":
        peer.allowed_ips.append(value)
    elif key == "persistent_keepalive_interval":
        peer.keepalive = int(value)
    elif key == "rx_bytes":
        peer.rx = int(value)
    elif key == "tx_bytes":
        peer.tx = int(value)
    elif key == "last_handshake_time_sec" and int(value):
        peer.last_handshake = datetime.fromtimestamp(int(value), UTC)
    elif key == "last_handshake_time_nsec":
        peer.handshake_nanos = int(value)


def read_device(name: str, sock_path: Path) -> FakeDevice:
    """The interface behind ``sock_path`` as the test server's device."""
    from nacl.bindings import crypto_scalarmult_base

    fields: dict[str, str] = {}
    peers: dict[str, FakePeer] = {}
    peer: FakePeer | None = None
    for key, value in uapi_get(sock_path):
        if key == "public_key":
            peer = FakePeer(public_key=_b64(value))
            peers[peer.public_key] = peer
        elif peer is None:
            fields[key] = value
        else:
            _apply(peer, key, value)
    private = bytes.fromhex(fields.get("private_key", ZERO_KEY_HEX))
    return FakeDevice(
        name=name,
        private_key=base64.b64encode(private).decode(),
        public_key=base64.b64encode(crypto_scalarmult_base(private)).decode(),
        listen_port=int(fields.get("listen_port", "0")),
        firewall_mark=int(fields.get("fwmark", "0")),
        peers=peers,
        unordered=True,  # wgctrl over wireguard-go: a Go map's order
    )


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM (PID 1 in the container: the handler makes `stop` quick)."""
    parser = argparse.ArgumentParser(description="wgrest v1 stand-in for the compose test")
    parser.add_argument("--conf", default="/etc/wgrest/wgrest.conf")
    parser.add_argument("--wireguard-dir", default="/etc/wireguard")
    parser.add_argument("--socket-dir", default="/run/wireguard")
    args = parser.parse_args(argv)
    conf = tomllib.loads(Path(args.conf).read_text())
    host, _, port = str(conf.get("listen", "127.0.0.1:8000")).rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        parser.error(f"{args.conf}: listen: the stand-in serves on loopback only, not {host!r}")
    token = os.environ.get("WGREST_STATIC_AUTH_TOKEN") or None
    box = ServerBox("v1", token=token, data_dir=conf.get("data-dir"))
    for conf_file in sorted(Path(args.wireguard_dir).glob("*.conf")):
        sock_path = Path(args.socket_dir) / f"{conf_file.stem}.sock"
        if sock_path.exists():
            box.devices[conf_file.stem] = read_device(conf_file.stem, sock_path)
    box.start(int(port))
    print(f"wgrest stand-in at {box.url}: {sorted(box.devices)}, auth {'on' if token else 'off'}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    box.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
