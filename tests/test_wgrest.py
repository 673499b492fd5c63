"""The wgrest source against a real HTTP server speaking wgrest v1 and v2.

Every test starts a real ThreadingHTTPServer (tests/beds/wgrest_server.py) on a
real port; faults are real HTTP answers (or a connection that never answers).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.beds.wgrest_server import (
    BAD_KEY,
    ServerBox,
    make_wgrest_server,
    private_to_public,
    random_key,
    url_safe,
    write_v1_data_dir,
)
from wgsyncd.config import WgrestConfig
from wgsyncd.sources import wgrest
from wgsyncd.state import Secret, Source, SourceResult

TOKEN = "t0ken-Very-Secret-123"
VERSIONS = ("v1", "v2")


@pytest.fixture(params=VERSIONS)
def server(request: pytest.FixtureRequest) -> Iterator[ServerBox]:
    """A started server of each version, with a token."""
    box = make_wgrest_server(request.param, token=TOKEN)
    try:
        yield box
    finally:
        box.stop()


def config(box: ServerBox, **over: Any) -> WgrestConfig:
    """A WgrestConfig for ``box`` (no data dir unless given)."""
    values: dict[str, Any] = {
        "url": box.url,
        "token": Secret(box.token) if box.token else None,
        "data_dir": None,
        "timeout": 5.0,
    }
    values.update(over)
    return WgrestConfig(**values)


def secrets_of(box: ServerBox) -> list[str]:
    """Every secret the server holds: none may appear in errors or logs."""
    out = [BAD_KEY] + ([box.token] if box.token else [])
    for dev in box.devices.values():
        out.append(dev.private_key)
        out.extend(p.preshared_key for p in dev.peers.values() if p.preshared_key)
    return out


def assert_no_secrets(result: SourceResult, caplog: pytest.LogCaptureFixture, secrets: list[str]) -> None:
    """No secret in any error text or captured log line (nor in the URL-safe spelling)."""
    texts = [str(e) for e in result.errors] + [r.getMessage() for r in caplog.records]
    for secret in secrets:
        spellings = {secret}
        if len(secret) == 44 and secret != BAD_KEY:
            spellings.add(url_safe(secret))
        for text in texts:
            for s in spellings:
                assert s not in text


def populate(box: ServerBox, peers: int = 3) -> None:
    """Two devices: wg0 with ``peers`` peers, wg1 with 2 (one with a preshared key)."""
    box.add_device("wg0", addresses=["198.51.100.1/24"], dns=["192.0.2.53"], mtu=1420)
    box.add_peers("wg0", peers, keepalive=25)
    box.add_device("wg1", listen_port=51821, firewall_mark=51)
    box.add_peer(
        "wg1", preshared_key=random_key(), allowed_ips=["203.0.113.2/32"], endpoint="192.0.2.9:51820"
    )
    box.add_peer("wg1", allowed_ips=["203.0.113.3/32"])


# --------------------------------------------------------------------------- happy paths


def test_multi_page_every_peer_once(server: ServerBox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    populate(server, peers=250)
    result = wgrest.read(config(server, per_page=100))
    assert result.errors == [] and result.available
    assert set(result.interfaces) == {"wg0", "wg1"}
    wg0 = result.interfaces["wg0"]
    assert list(wg0.peers) == sorted(server.devices["wg0"].peers)  # all 250, in sort=pub_key order
    assert len(wg0.peers) == 250
    peer_pages = [p for p in server.paths() if p.startswith("/v1/devices/wg0/peers/")]
    assert len(peer_pages) == 3 and len(set(peer_pages)) == 3  # each page exactly once
    assert all(p.provenance["allowed_ips"] == Source.WGREST for p in wg0.peers.values())
    assert wg0.public_key == server.devices["wg0"].public_key
    assert wg0.addresses == ("198.51.100.1/24",)
    if server.version == "v2":
        assert wg0.private_key is not None and wg0.private_key.reveal() == server.devices["wg0"].private_key
        assert wg0.dns == ("192.0.2.53",) and wg0.mtu == 1420
    else:
        assert wg0.private_key is None and wg0.dns is None and wg0.mtu is None
    wg1 = result.interfaces["wg1"]
    assert (wg1.listen_port, wg1.fwmark) == (51821, 51)
    first = wg1.peers[next(iter(server.devices["wg1"].peers))]  # the one populate gave a psk
    assert first.preshared_key and first.preshared_key.reveal() == secrets_of(server)[-1]
    assert first.endpoint == "192.0.2.9:51820"
    assert_no_secrets(result, caplog, secrets_of(server))


def test_token_sent_on_every_request(server: ServerBox) -> None:
    populate(server)
    wgrest.read(config(server))
    assert server.requests
    assert {r.authorization for r in server.requests if r.path.startswith("/v1/")} == {f"Bearer {TOKEN}"}


def test_no_token_gives_one_401_error(server: ServerBox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    populate(server)
    result = wgrest.read(config(server, token=None))
    assert result.available and result.interfaces == {}
    assert len(result.errors) == 1
    err = result.errors[0]
    assert err.source == Source.WGREST and err.interface is None
    assert err.where.startswith(server.url + "/v1/devices/")
    assert "401" in err.message and "token" in err.message
    assert all(r.authorization is None for r in server.requests)


def test_wrong_token_gives_one_401_error(server: ServerBox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    populate(server)
    wrong = "Wrong-Token-Not-To-Be-Shown"
    result = wgrest.read(config(server, token=Secret(wrong)))
    assert len(result.errors) == 1 and "401" in result.errors[0].message
    assert_no_secrets(result, caplog, [*secrets_of(server), wrong])


def test_times_and_durations(server: ServerBox) -> None:
    server.add_device("wg0")
    when = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    never = server.add_peer("wg0", keepalive=0)
    recent = server.add_peer("wg0", keepalive=90, last_handshake=when, handshake_nanos=123456789)
    hourly = server.add_peer("wg0", keepalive=3600, last_handshake=when + timedelta(hours=1))
    peers = wgrest.read(config(server)).interfaces["wg0"].peers
    assert peers[never.public_key].latest_handshake is None
    assert peers[never.public_key].persistent_keepalive == 0
    assert peers[recent.public_key].latest_handshake == when.replace(microsecond=123456)
    assert peers[recent.public_key].persistent_keepalive == 90
    assert peers[hourly.public_key].persistent_keepalive == 3600
    assert peers[hourly.public_key].latest_handshake.utcoffset() == timedelta(0)


def test_want_skips_device_and_its_peers(server: ServerBox) -> None:
    populate(server)
    result = wgrest.read(config(server), want=lambda name: name != "wg1")
    assert set(result.interfaces) == {"wg0"} and result.errors == []
    assert not any("/wg1/" in p for p in server.paths())


def test_forced_version_skips_probe(server: ServerBox) -> None:
    populate(server)
    result = wgrest.read(config(server, api_version=server.version))
    assert set(result.interfaces) == {"wg0", "wg1"}
    assert not any("version" in p for p in server.paths())


def test_tiny_pages_and_empty_device(server: ServerBox) -> None:
    server.add_device("wg0")
    server.add_peers("wg0", 7)
    server.add_device("wg9")  # no peers: v2 sends no Link at all
    result = wgrest.read(config(server, per_page=2))
    assert result.errors == []
    assert len(result.interfaces["wg0"].peers) == 7 and result.interfaces["wg9"].peers == {}
    assert len([p for p in server.paths() if "/wg0/peers/" in p]) == 4


def test_pages_of_a_device_listed_in_a_new_order_every_time(server: ServerBox) -> None:
    """Over wireguard-go, wgctrl hands wgrest the peers in a Go map's order, new per request.

    Unsorted pages would repeat some peers and miss others; the reader asks for
    sort=pub_key, so 250 peers in pages of 20 arrive exactly once each.
    """
    server.add_device("wg0")
    keys = {p.public_key for p in server.add_peers("wg0", 250)}
    server.devices["wg0"].unordered = True
    url = f"{server.url}/v1/devices/wg0/peers/?per_page=250"
    auth = {"Authorization": f"Bearer {server.token}"}
    orders = {
        tuple(p["public_key"] for p in requests.get(url, headers=auth, timeout=5).json()) for _ in range(3)
    }
    assert len(orders) > 1  # the bed really reorders, so the next assertion means something
    result = wgrest.read(config(server, per_page=20))
    assert result.errors == []
    assert set(result.interfaces["wg0"].peers) == keys
    pages = [p for p in server.paths() if "/wg0/peers/" in p and "per_page=250" not in p]
    assert len(pages) == 13 and all("sort=pub_key" in p for p in pages), pages


def test_empty_server(server: ServerBox) -> None:
    result = wgrest.read(config(server))
    assert result.available and result.errors == [] and result.interfaces == {}


# --------------------------------------------------------------------------- v1 data dir


def test_v1_data_dir_private_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with make_wgrest_server("v1", data_dir=tmp_path) as box:
        box.add_device("wg0")
        with_key = random_key()
        box.add_peer("wg0", private_key=with_key, allowed_ips=["198.51.100.2/32"])  # written by the "server"
        plain = box.add_peer("wg0", allowed_ips=["198.51.100.3/32"])
        stale = random_key()  # a deleted peer's file: wgrest never removes them
        write_v1_data_dir(tmp_path, [stale], devices={"wg0": {"dns": ["192.0.2.53"], "host": "vpn.example"}})
        result = wgrest.read(config(box, data_dir=str(tmp_path)))
        assert result.errors == []
        peers = result.interfaces["wg0"].peers
        keyed = peers[private_to_public(with_key)]
        assert keyed.private_key is not None and keyed.private_key.reveal() == with_key
        assert keyed.provenance["private_key"] == Source.WGREST
        assert peers[plain.public_key].private_key is None
        assert private_to_public(stale) not in peers
        assert (
            tmp_path / "v1" / f"{url_safe(private_to_public(with_key))}.conf"
        ).stat().st_mode & 0o777 == 0o600
        defaults = wgrest.read_device_defaults(tmp_path)
        assert defaults == {
            "wg0": wgrest.DeviceDefaults("wg0", dns=("192.0.2.53",), allowed_ips=(), host="vpn.example")
        }
        assert_no_secrets(result, caplog, [with_key, stale])


def test_v1_data_dir_bad_key_file_is_one_error_for_its_interface(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with make_wgrest_server("v1") as box:
        box.add_device("wg0")
        peer = box.add_peer("wg0")
        v1 = tmp_path / "v1"
        v1.mkdir()
        (v1 / f"{url_safe(peer.public_key)}.conf").write_text(f"PrivateKey = {BAD_KEY}\n")
        result = wgrest.read(config(box, data_dir=str(tmp_path)))
        assert list(result.interfaces) == ["wg0"]  # the interface stays, only the key is unknown
        assert result.interfaces["wg0"].peers[peer.public_key].private_key is None
        assert len(result.errors) == 1
        err = result.errors[0]
        assert err.interface == "wg0" and err.where.startswith(str(v1)) and "PrivateKey" in err.where
        assert peer.public_key not in str(err) and url_safe(peer.public_key) not in str(err)
        assert_no_secrets(result, caplog, [BAD_KEY])


def test_data_dir_missing_is_fine(tmp_path: Path) -> None:
    with make_wgrest_server("v1") as box:
        box.add_device("wg0")
        result = wgrest.read(config(box, data_dir=str(tmp_path / "nope")))
        assert result.errors == [] and "wg0" in result.interfaces


# --------------------------------------------------------------------------- faults


WHOLE_SOURCE_FAULTS = ("500", "garbage", "401", "link_loop", "link_offsite")


@pytest.mark.parametrize("fault", WHOLE_SOURCE_FAULTS)
def test_fault_everywhere_is_one_error_no_interfaces(
    server: ServerBox, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    populate(server)
    server.fault = fault
    result = wgrest.read(config(server))
    assert result.available and result.interfaces == {}
    assert len(result.errors) == 1, result.errors
    err = result.errors[0]
    assert err.interface is None and err.where.startswith(server.url + "/")
    assert_no_secrets(result, caplog, secrets_of(server))


@pytest.mark.parametrize(
    "fault", ("500", "garbage", "401", "bad_key", "key_not_text", "fail_page_2", "link_loop", "link_offsite")
)
def test_fault_on_one_device_drops_only_it(
    server: ServerBox, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    populate(server, peers=150)  # wg0: 2 pages
    server.add_device("wg2")
    server.add_peers("wg2", 150)
    server.fault = fault
    server.fault_path = "/devices/wg2/"
    result = wgrest.read(config(server, per_page=100))
    assert set(result.interfaces) == {"wg0", "wg1"}
    assert len(result.interfaces["wg0"].peers) == 150
    assert len(result.errors) == 1, result.errors
    err = result.errors[0]
    assert err.interface == "wg2" and err.where.startswith(server.url + "/v1/devices/wg2/peers/")
    if fault == "bad_key":
        assert err.where.endswith("preshared_key")
    if fault == "key_not_text":  # not even hashable: the reuse lookup must not trip over it
        assert err.where.endswith("public_key")
    assert_no_secrets(result, caplog, secrets_of(server))


def test_fault_messages_are_clear(server: ServerBox) -> None:
    populate(server)
    expected = {
        "500": "HTTP 500",
        "garbage": "not valid JSON",
        "401": "HTTP 401",
        "link_loop": "pagination loop",
        "link_offsite": "another host",
    }
    for fault, text in expected.items():
        server.fault = fault
        (err,) = wgrest.read(config(server, api_version=server.version)).errors
        assert text in err.message, (fault, err)


def test_hang_trips_timeout(server: ServerBox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    populate(server)
    server.fault = "hang"
    start = time.monotonic()
    result = wgrest.read(config(server, timeout=0.5))
    elapsed = time.monotonic() - start
    assert server.hung.is_set()
    assert 0.45 <= elapsed < 3.0, elapsed
    assert result.interfaces == {} and len(result.errors) == 1
    assert "timeout" in result.errors[0].message and result.errors[0].interface is None
    assert_no_secrets(result, caplog, secrets_of(server))


def test_drip_trips_the_whole_answer_deadline(server: ServerBox) -> None:
    populate(server)
    server.fault = "drip"
    start = time.monotonic()
    result = wgrest.read(config(server, timeout=0.5, api_version=server.version))
    assert time.monotonic() - start < 3.0
    (err,) = result.errors
    assert "timeout" in err.message and err.interface is None and result.interfaces == {}


def test_after_a_timeout_remaining_devices_are_not_asked(server: ServerBox) -> None:
    for name in ("wg0", "wg1", "wg2", "wg3"):
        server.add_device(name)
        server.add_peers(name, 2)
    server.fault = "hang"
    server.fault_path = "/peers/"
    start = time.monotonic()
    result = wgrest.read(config(server, timeout=0.5))
    assert time.monotonic() - start < 1.5  # one timeout, not four
    assert result.interfaces == {}
    assert [e.interface for e in result.errors] == ["wg0", "wg1", "wg2", "wg3"]
    assert "timeout" in result.errors[0].message and "timed out earlier" in result.errors[3].message
    assert len([p for p in server.paths() if "/peers/" in p]) == 1


def test_hang_on_one_device(server: ServerBox) -> None:
    populate(server)
    server.fault = "hang"
    server.fault_path = "/devices/wg1/peers/"
    start = time.monotonic()
    result = wgrest.read(config(server, timeout=0.5))
    assert time.monotonic() - start < 3.0
    assert set(result.interfaces) == {"wg0"}
    assert [e.interface for e in result.errors] == ["wg1"]


def test_list_shifting_between_pages_is_read_again(server: ServerBox) -> None:
    server.add_device("wg0")
    server.add_peers("wg0", 150)
    server.fault = "shift_peers"
    server.fault_limit = 1  # one peer added while the first read was paging
    result = wgrest.read(config(server, per_page=100))
    assert result.errors == []
    assert list(result.interfaces["wg0"].peers) == sorted(server.devices["wg0"].peers)
    assert len(result.interfaces["wg0"].peers) == 151
    assert len([p for p in server.paths() if "/wg0/peers/" in p]) == 4  # 2 pages, twice


def test_list_that_keeps_shifting_drops_the_device(server: ServerBox) -> None:
    server.add_device("wg0")
    server.add_peers("wg0", 150)
    server.add_device("wg1")
    server.fault = "shift_peers"
    server.fault_path = "/wg0/"
    result = wgrest.read(config(server, per_page=100))
    assert set(result.interfaces) == {"wg1"}
    (err,) = result.errors
    assert err.interface == "wg0" and "kept changing" in err.message
    assert len([p for p in server.paths() if "/wg0/peers/" in p]) == 2 * wgrest.PEER_READ_ATTEMPTS


def test_v2_config_only_device_is_skipped() -> None:
    with make_wgrest_server("v2") as box:
        box.add_device("wg0")
        box.add_device("wg5", running=False)
        result = wgrest.read(config(box))
        assert set(result.interfaces) == {"wg0"} and result.errors == []
        assert not any("/wg5/" in p for p in box.paths())


def _free_port() -> int:
    """A port nothing listens on (bound then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_optional_is_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = WgrestConfig(
        url=f"http://127.0.0.1:{_free_port()}", token=Secret(TOKEN), data_dir=None, optional=True
    )
    result = wgrest.read(cfg)
    assert result.available is False and result.errors == [] and result.interfaces == {}
    assert any("not running" in r.getMessage() for r in caplog.records)
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


def test_connection_refused_required_is_an_error() -> None:
    port = _free_port()
    cfg = WgrestConfig(url=f"http://127.0.0.1:{port}", data_dir=None, optional=False)
    result = wgrest.read(cfg)
    assert result.available is True and result.interfaces == {}
    (err,) = result.errors
    assert "refused" in err.message and err.where.startswith(f"http://127.0.0.1:{port}/")


def test_disabled_is_unavailable() -> None:
    result = wgrest.read(WgrestConfig(enabled=False, url="http://127.0.0.1:9", data_dir=None))
    assert result.available is False and result.errors == []


def test_credentials_in_url_never_shown(server: ServerBox) -> None:
    server.fault = "500"
    url = server.url.replace("http://", "http://user:Url-Password-42@")
    (err,) = wgrest.read(config(server, url=url, api_version=server.version)).errors
    assert "Url-Password-42" not in str(err) and "user" not in err.where


# --------------------------------------------------------------------------- the bed itself


def test_bed_v1_link_header_matches_wgrest() -> None:
    with make_wgrest_server("v1") as box:
        box.add_device("wg0")
        box.add_peers("wg0", 5)
        resp = requests.get(f"{box.url}/v1/devices/wg0/peers/?per_page=2&page=2", timeout=5)
        assert resp.headers["Link"] == (
            '</v1/devices/wg0/peers/?per_page=2>; rel="first",'
            '</v1/devices/wg0/peers/?page=3&per_page=2>; rel="last",'
            '</v1/devices/wg0/peers/?page=3&per_page=2>; rel="next",'
            '</v1/devices/wg0/peers/?per_page=2>; rel="prev"'
        )
        zero = requests.get(f"{box.url}/v1/devices/wg0/peers/?per_page=2&page=0", timeout=5).json()
        one = requests.get(f"{box.url}/v1/devices/wg0/peers/?per_page=2&page=1", timeout=5).json()
        assert zero == one and len(one) == 2  # v1: page <= 0 is page 1


def test_bed_v2_link_header_matches_wgrest() -> None:
    with make_wgrest_server("v2") as box:
        box.add_device("wg0")
        box.add_peers("wg0", 5)
        resp = requests.get(f"{box.url}/v1/devices/wg0/peers/?per_page=2&page=1", timeout=5)
        assert resp.headers["Link"] == (
            '</v1/devices/wg0/peers/?page=0&per_page=2>; rel="first", '
            '</v1/devices/wg0/peers/?page=2&per_page=2>; rel="last", '
            '</v1/devices/wg0/peers/?page=0&per_page=2>; rel="prev", '
            '</v1/devices/wg0/peers/?page=2&per_page=2>; rel="next"'
        )
        assert requests.get(f"{box.url}/version", timeout=5).json()["wgrest"].startswith("v2")


def test_bed_peer_crud_for_restore(tmp_path: Path) -> None:
    for version in VERSIONS:
        with make_wgrest_server(version, token=TOKEN, data_dir=tmp_path / version) as box:
            box.add_device("wg0")
            auth = {"Authorization": f"Bearer {TOKEN}"}
            private = random_key()
            body = {
                "private_key": private,
                "allowed_ips": ["198.51.100.7/32"],
                "persistent_keepalive_interval": "25s",
            }
            created = requests.post(f"{box.url}/v1/devices/wg0/peers/", json=body, headers=auth, timeout=5)
            assert created.status_code == 201
            safe = created.json()["url_safe_public_key"]
            assert created.json()["public_key"] == private_to_public(private)
            peer_url = f"{box.url}/v1/devices/wg0/peers/{safe}/"
            patched = requests.patch(peer_url, json={"endpoint": "192.0.2.7:51820"}, headers=auth, timeout=5)
            assert patched.json()["endpoint"] == "192.0.2.7:51820"
            assert (
                requests.get(peer_url, headers=auth, timeout=5).json()["persistent_keepalive_interval"]
                == "25s"
            )
            assert requests.delete(peer_url, headers=auth, timeout=5).status_code == 200
            missing = requests.get(peer_url, headers=auth, timeout=5)
            assert missing.status_code == 404 and set(missing.json()) == {"code", "message", "detail"}
            key_file = tmp_path / version / "v1" / f"{safe}.conf"
            assert key_file.exists() == (version == "v1")  # v1 keeps peer keys, never deletes them
            assert requests.get(peer_url, timeout=5).status_code == 401


def test_round_trip_through_load_state(server: ServerBox) -> None:
    populate(server, peers=120)
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    server.add_peer("wg1", last_handshake=when, rx=5, tx=6, keepalive=90)
    first = wgrest.read(config(server))
    with make_wgrest_server(server.version) as copy:
        copy.load_state(first.interfaces.values())
        second = wgrest.read(config(copy))
    assert second.errors == [] and set(second.interfaces) == set(first.interfaces)
    for name, iface in first.interfaces.items():
        other = second.interfaces[name]
        assert list(other.peers) == list(iface.peers)
        for key, peer in iface.peers.items():
            got = other.peers[key]
            assert (got.allowed_ips, got.endpoint, got.persistent_keepalive) == (
                peer.allowed_ips,
                peer.endpoint,
                peer.persistent_keepalive,
            )
            assert (got.latest_handshake, got.rx_bytes, got.tx_bytes) == (
                peer.latest_handshake,
                peer.rx_bytes,
                peer.tx_bytes,
            )
            assert (got.preshared_key and got.preshared_key.fingerprint()) == (
                peer.preshared_key and peer.preshared_key.fingerprint()
            )
        assert (other.listen_port, other.fwmark, other.addresses, other.dns, other.mtu) == (
            iface.listen_port,
            iface.fwmark,
            iface.addresses,
            iface.dns,
            iface.mtu,
        )
        if server.version == "v2":  # only v2 serves the private key, so only there it round-trips
            assert other.public_key == iface.public_key


def test_bed_rejects_unknown_fault() -> None:
    with make_wgrest_server("v1") as box, pytest.raises(ValueError):
        box.fault = "explode"


def test_bed_fixture(wgrest_server: ServerBox) -> None:
    assert wgrest_server.version == "v1" and wgrest_server.token is None
    wgrest_server.add_device("wg0")
    assert set(wgrest.read(config(wgrest_server)).interfaces) == {"wg0"}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a file unreadable to its reader")
def test_v1_unreadable_dir_listing(tmp_path: Path) -> None:
    # root reads anything, so make "v1" a file's worth of trouble instead: a symlinked key file
    with make_wgrest_server("v1") as box:
        box.add_device("wg0")
        peer = box.add_peer("wg0")
        v1 = tmp_path / "v1"
        v1.mkdir()
        target = tmp_path / "elsewhere"
        target.write_text(f"PrivateKey = {random_key()}\n")
        (v1 / f"{url_safe(peer.public_key)}.conf").symlink_to(target)
        result = wgrest.read(config(box, data_dir=str(tmp_path)))
        (err,) = result.errors
        assert err.interface == "wg0" and "cannot read" in err.message
        assert result.interfaces["wg0"].peers[peer.public_key].private_key is None


def test_memo_of_a_device_wgrest_no_longer_lists_is_dropped(server: ServerBox) -> None:
    """Peers are reused across cycles by JSON equality; a deleted device takes its memo along."""
    server.add_device("wg0")
    server.add_device("wg1")
    server.add_peers("wg0", 3)
    server.add_peers("wg1", 2)
    seen: dict = {}  # the daemon's memo.Memo.wgrest
    first = wgrest.read(config(server), memo=seen)
    second = wgrest.read(config(server), memo=seen)
    assert all(second.interfaces["wg0"].peers[k] is p for k, p in first.interfaces["wg0"].peers.items())
    assert {"wg0", "wg1"} <= set(seen)
    wgrest.read(config(server), want=lambda name: name != "wg1", memo=seen)  # excluded: its memo goes
    assert "wg1" not in seen and "wg0" in seen
    wgrest.read(config(server), memo=seen)
    del server.devices["wg1"]
    wgrest.read(config(server), memo=seen)
    assert "wg1" not in seen


def test_restore_lists_every_peer_of_an_unordered_device(server: ServerBox) -> None:
    """`restore --to-wgrest` diffs against wgrest's peer list: over wireguard-go that list
    must be complete and duplicate-free, or restore would re-add and miss peers."""
    from wgsyncd.restore.wgrest import _Http

    server.add_device("wg0")
    keys = {p.public_key for p in server.add_peers("wg0", 350)}
    server.devices["wg0"].unordered = True
    listed = [p["public_key"] for p in _Http(server.url, Secret(server.token), 5.0).list_peers("wg0")]
    assert len(listed) == 350 and set(listed) == keys
