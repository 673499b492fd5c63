"""The compose test's wgrest stand-in (tests/beds/wgrest_standin.py), without containers.

What the compose test relies on, checked fast against a real wireguard-go interface:
the stand-in serves exactly what ``wg show dump`` shows, reads ``listen`` from wgrest's
TOML config, requires the token from WGREST_STATIC_AUTH_TOKEN, and stops on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.beds.postgres import free_tcp_port
from tests.beds.wgrest_standin import read_device
from tests.beds.wireguard import WgBed

STANDIN = Path(__file__).resolve().parent / "beds/wgrest_standin.py"


def _dump_peers(dump: str) -> dict[str, tuple[str, str, list[str], int]]:
    """``wg show dump`` peer lines -> key: (psk, endpoint, allowed IPs, keepalive)."""
    out = {}
    for line in dump.splitlines()[1:]:
        key, psk, endpoint, allowed, _hs, _rx, _tx, keepalive = line.split("\t")
        out[key] = (
            "" if psk == "(none)" else psk,
            "" if endpoint == "(none)" else endpoint,
            [] if allowed == "(none)" else allowed.split(","),
            0 if keepalive == "off" else int(keepalive),
        )
    return out


def test_read_device_matches_wg_dump(wg_bed: WgBed) -> None:
    """Keys, preshared keys, endpoints, allowed IPs, keepalive and port: as `wg` shows them."""
    iface = wg_bed.create(peers=6, listen_port=51999)
    dev = read_device(iface.name, Path(iface.socket_path))
    dump = iface.dump()
    own = dump.splitlines()[0].split("\t")
    assert (dev.private_key, dev.public_key, dev.listen_port) == (own[0], own[1], 51999)
    served = {
        key: (p.preshared_key, p.endpoint, sorted(p.allowed_ips), p.keepalive) for key, p in dev.peers.items()
    }
    expected = {key: (v[0], v[1], sorted(v[2]), v[3]) for key, v in _dump_peers(dump).items()}
    assert served == expected and len(served) == 6


def _get(url: str, token: str | None) -> tuple[int, object]:
    """Status and JSON body of a GET."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def test_standin_serves_conf_interfaces_with_the_token(wg_bed: WgBed, tmp_path: Path) -> None:
    """`wgrest --conf` semantics: listen from TOML, token from the environment, SIGTERM stops it."""
    iface = wg_bed.create(peers=3)
    other = wg_bed.create(peers=1)  # has a socket but no conf file: not served
    wgdir = tmp_path / "wireguard"
    wgdir.mkdir()
    (wgdir / f"{iface.name}.conf").write_text(iface.showconf())
    port = free_tcp_port()
    conf = tmp_path / "wgrest.conf"
    conf.write_text(f'listen = "127.0.0.1:{port}"\ndata-dir = "{tmp_path / "data"}"\n')
    env = {**os.environ, "WGREST_STATIC_AUTH_TOKEN": "t0ken"}
    cmd = [sys.executable, str(STANDIN), "--conf", str(conf), "--wireguard-dir", str(wgdir)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # printed once it is listening
        assert f"127.0.0.1:{port}" in first and "auth on" in first, first
        base = f"http://127.0.0.1:{port}/v1/devices/"
        assert _get(base, None)[0] == 401
        status, devices = _get(base, "t0ken")
        assert status == 200 and [d["name"] for d in devices] == [iface.name]  # type: ignore[union-attr]
        assert other.name not in json.dumps(devices)
        status, peers = _get(f"{base}{iface.name}/peers/", "t0ken")
        expected = {line.split("\t")[0] for line in iface.dump().splitlines()[1:]}
        assert status == 200 and {p["public_key"] for p in peers} == expected  # type: ignore[union-attr]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
