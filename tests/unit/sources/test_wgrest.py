"""Unit tests of the wgrest source's pure parts: durations, times, Link, mapping."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgsyncd.sources.wgrest import (
    WgrestProblem,
    keepalive_seconds,
    parse_device,
    parse_go_duration,
    parse_handshake_time,
    parse_link_header,
    parse_peer,
    redact_url,
    scrub,
    std_to_url_safe,
    url_safe_to_std,
)
from wgsyncd.state import Secret, Source

WHERE = "http://127.0.0.1:1/v1/devices/wg0/peers/?per_page=100 [0]"


def key() -> str:
    """A random valid key."""
    return base64.b64encode(os.urandom(32)).decode()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0s", 0), ("0", 0), ("25s", 25), ("1m30s", 90), ("1h0m0s", 3600), ("2h1m5s", 7265), ("65535s", 65535)],
)
def test_keepalive_from_go_duration(text: str, seconds: int) -> None:
    assert keepalive_seconds(text) == seconds


def test_go_duration_fractions_and_units() -> None:
    assert parse_go_duration("1.5s") == pytest.approx(1.5)
    assert parse_go_duration("500ms") == pytest.approx(0.5)
    assert parse_go_duration("1µs") == pytest.approx(1e-6)
    assert parse_go_duration("-1m") == pytest.approx(-60)


@pytest.mark.parametrize("text", ["", "25", "s", "1x", "1m30", "25 s", "abc"])
def test_go_duration_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


@pytest.mark.parametrize("text", ["1.5s", "-1s", "65536s", "500ms"])
def test_keepalive_rejects_what_wireguard_cannot_hold(text: str) -> None:
    with pytest.raises(ValueError):
        keepalive_seconds(text)


def test_handshake_zero_time_is_never() -> None:
    assert parse_handshake_time("0001-01-01T00:00:00Z") is None
    assert parse_handshake_time("1970-01-01T00:00:00Z") is None


def test_handshake_times_are_aware_utc() -> None:
    when = parse_handshake_time("2024-05-01T12:00:03.123456789Z")
    assert when == datetime(2024, 5, 1, 12, 0, 3, 123456, tzinfo=UTC)
    assert when.tzinfo is UTC
    assert parse_handshake_time("2024-05-01T14:00:03+02:00") == datetime(2024, 5, 1, 12, 0, 3, tzinfo=UTC)
    half = datetime(2024, 5, 1, 12, 0, 3, 500000, tzinfo=UTC)
    assert parse_handshake_time("2024-05-01T12:00:03.5Z") == half


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2024-05-01", "2024-05-01T12:00:00", "2024-13-01T00:00:00Z"]
)
def test_handshake_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_handshake_time(text)


def test_link_header_v1_style_no_space() -> None:
    value = (
        '</v1/devices/wg0/peers/?per_page=100>; rel="first",'
        '</v1/devices/wg0/peers/?page=3&per_page=100>; rel="last",'
        '</v1/devices/wg0/peers/?page=3&per_page=100>; rel="next",'
        '</v1/devices/wg0/peers/?per_page=100>; rel="prev"'
    )
    links = parse_link_header(value)
    assert links["next"] == "/v1/devices/wg0/peers/?page=3&per_page=100"
    assert links["prev"] == "/v1/devices/wg0/peers/?per_page=100"
    assert set(links) == {"first", "last", "next", "prev"}


def test_link_header_v2_style_and_variants() -> None:
    value = '<a?page=0>; rel="first", <a?page=2>; rel="last", <a?page=0>; rel="prev", <a?page=2>; rel="next"'
    assert parse_link_header(value)["next"] == "a?page=2"
    assert parse_link_header("<x>; rel=next")["next"] == "x"
    assert parse_link_header('<x>; title="t"; rel="prev next"')["next"] == "x"
    assert parse_link_header('<x>; rel="last"') == {"last": "x"}
    assert parse_link_header("") == {}


def test_url_safe_names() -> None:
    k = key()
    safe = std_to_url_safe(k)
    assert len(safe) == 44 and safe.endswith("=") and "+" not in safe and "/" not in safe
    assert url_safe_to_std(safe) == k
    assert url_safe_to_std("wg0") is None
    assert url_safe_to_std(safe[:-1]) is None
    assert url_safe_to_std("!" * 43 + "=") is None
    assert url_safe_to_std(k) is None or ("+" not in k and "/" not in k)  # std alphabet with + or /


def test_redact_and_scrub() -> None:
    assert redact_url("http://u:pw@127.0.0.1:51822/v1/") == "http://127.0.0.1:51822/v1/"
    assert redact_url("http://127.0.0.1:51822/v1/") == "http://127.0.0.1:51822/v1/"
    k = key()
    text = scrub(f"bad key {k} and {std_to_url_safe(k)} token s3cr3t-tok", Secret("s3cr3t-tok"))
    assert k not in text and std_to_url_safe(k) not in text and "s3cr3t-tok" not in text
    assert len(scrub("x" * 1000, None)) < 200


def v1_peer(**over: object) -> dict[str, object]:
    """A peer as wgrest v1 serializes it."""
    pub = key()
    out: dict[str, object] = {
        "public_key": pub,
        "url_safe_public_key": std_to_url_safe(pub),
        "allowed_ips": ["198.51.100.2/32", "fd00::2/128"],
        "last_handshake_time": "0001-01-01T00:00:00Z",
        "persistent_keepalive_interval": "25s",
        "endpoint": "",
        "receive_bytes": 10,
        "transmit_bytes": 20,
    }
    out.update(over)
    return out


def test_parse_peer_v1_shape() -> None:
    psk = key()
    raw = v1_peer(preshared_key=psk, endpoint="192.0.2.1:51820")
    peer = parse_peer(raw, WHERE)
    assert peer.public_key == raw["public_key"]
    assert isinstance(peer.preshared_key, Secret) and peer.preshared_key.reveal() == psk
    assert peer.allowed_ips == ("198.51.100.2/32", "fd00::2/128")
    assert peer.endpoint == "192.0.2.1:51820"
    assert peer.persistent_keepalive == 25
    assert peer.latest_handshake is None
    assert (peer.rx_bytes, peer.tx_bytes) == (10, 20)
    assert set(peer.provenance) >= {"public_key", "preshared_key", "endpoint", "latest_handshake"}
    assert set(peer.provenance.values()) == {Source.WGREST}
    assert psk not in repr(peer)


def test_parse_peer_v2_omitempty() -> None:
    raw = v1_peer()
    del raw["endpoint"]
    del raw["persistent_keepalive_interval"]
    peer = parse_peer(raw, WHERE)
    assert peer.endpoint is None
    assert peer.preshared_key is None
    assert peer.persistent_keepalive is None
    assert "persistent_keepalive" not in peer.provenance


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"public_key": "nope"}, "public_key"),
        ({"public_key": None}, "public_key"),
        ({"preshared_key": "SECRETSECRETSECRETSECRETSECRETSECRETSECRE!="}, "preshared_key"),
        ({"allowed_ips": "10.0.0.1/32"}, "allowed_ips"),
        ({"allowed_ips": ["10.0.0.300/32"]}, "allowed_ips[0]"),
        ({"receive_bytes": "10"}, "receive_bytes"),
        ({"receive_bytes": -1}, "receive_bytes"),
        ({"transmit_bytes": True}, "transmit_bytes"),
        ({"persistent_keepalive_interval": "soon"}, "persistent_keepalive_interval"),
        ({"last_handshake_time": "yesterday"}, "last_handshake_time"),
        ({"endpoint": 5}, "endpoint"),
    ],
)
def test_parse_peer_errors_name_the_field_not_the_value(over: dict[str, object], field: str) -> None:
    raw = v1_peer(**over)
    with pytest.raises(WgrestProblem) as info:
        parse_peer(raw, WHERE)
    assert info.value.where == f"{WHERE} {field}"
    for value in over.values():
        if isinstance(value, str) and len(value) > 5:
            assert value not in str(info.value)


def test_parse_peer_not_an_object() -> None:
    with pytest.raises(WgrestProblem, match="expected a peer object, got array"):
        parse_peer([], WHERE)


def test_parse_device_v1() -> None:
    pub = key()
    raw = {
        "name": "wg0",
        "listen_port": 51820,
        "public_key": pub,
        "firewall_mark": 0,
        "networks": ["10.71.25.1/24"],
        "peers_count": 0,
        "total_receive_bytes": 0,
        "total_transmit_bytes": 0,
    }
    iface = parse_device(raw, "v1", "u")
    assert (iface.name, iface.listen_port, iface.public_key, iface.fwmark) == ("wg0", 51820, pub, 0)
    assert iface.addresses == ("10.71.25.1/24",)
    assert iface.dns is None and iface.mtu is None and iface.private_key is None
    assert "dns" not in iface.provenance and iface.provenance["addresses"] == Source.WGREST


def test_parse_device_v2_private_key_is_secret() -> None:
    priv, pub = key(), key()
    raw = {
        "name": "wg1",
        "listen_port": 51821,
        "public_key": pub,
        "private_key": priv,
        "addresses": ["10.0.0.1/24", "fd00::1/64"],
        "dns": ["192.0.2.53"],
        "mtu": 1420,
        "table": "off",
        "post_up": ["iptables -A FORWARD -i %i -j ACCEPT"],
        "running": True,
    }
    iface = parse_device(raw, "v2", "u")
    assert isinstance(iface.private_key, Secret) and iface.private_key.reveal() == priv
    assert priv not in repr(iface)
    assert iface.fwmark == 0 and iface.mtu == 1420 and iface.table == "off"
    assert iface.addresses == ("10.0.0.1/24", "fd00::1/64") and iface.dns == ("192.0.2.53",)
    assert iface.post_up == ("iptables -A FORWARD -i %i -j ACCEPT",) and iface.pre_down == ()
    assert iface.provenance["private_key"] == Source.WGREST and iface.provenance["mtu"] == Source.WGREST


def test_parse_device_v2_omitted_fields() -> None:
    iface = parse_device({"name": "wg2", "listen_port": 1, "public_key": key()}, "v2", "u")
    assert iface.addresses == () and iface.dns == () and iface.mtu is None and iface.table is None
    assert iface.private_key is None and "private_key" not in iface.provenance


@pytest.mark.parametrize(
    ("raw", "where_end"),
    [
        ({"name": ""}, "name"),
        ({"name": "a-very-long-interface-name"}, "name"),
        ({"name": "../etc"}, "name"),
        ({"name": "wg0", "listen_port": 70000}, "listen_port"),
        ({"name": "wg0", "private_key": "short"}, "private_key"),
        ({"name": "wg0", "networks": [1]}, "networks"),
    ],
)
def test_parse_device_errors(raw: dict[str, object], where_end: str) -> None:
    with pytest.raises(WgrestProblem) as info:
        parse_device(raw, "v1", "u")
    assert info.value.where == f"u {where_end}"


def test_wgrest_error_repeats_the_http_reason_phrase_only_scrubbed() -> None:
    """The reason phrase is server text like any other: no token, no key, bounded length."""
    import http.server
    import threading

    from wgsyncd.config import WgrestConfig
    from wgsyncd.sources import wgrest
    from wgsyncd.state import Secret

    token, leaked_key = "t0ken-" + os.urandom(8).hex(), key()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(502, f"Bad {self.headers.get('Authorization')} {leaked_key} " + "x" * 400)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        cfg = WgrestConfig(
            url=f"http://127.0.0.1:{server.server_address[1]}",
            token=Secret(token),
            api_version="v1",
            timeout=5,
            data_dir=None,
        )
        result = wgrest.read(cfg)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    (err,) = result.errors
    text = str(err)
    assert "HTTP 502" in text
    assert token not in text and leaked_key not in text and len(text) < 400


def test_wgrest_headers_dripped_slowly_still_trip_the_deadline() -> None:
    """A server dripping its *headers* a byte at a time never trips a per-recv socket timeout;
    the whole-answer deadline must cover the headers too, not start once they are in."""
    import socket
    import threading
    import time

    from wgsyncd.config import WgrestConfig
    from wgsyncd.sources import wgrest

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not stop.wait(0.05):  # a byte every 50 ms, forever
                try:
                    conn.sendall(b"a")
                except OSError:
                    return

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    cfg = WgrestConfig(url=f"http://127.0.0.1:{listener.getsockname()[1]}", api_version="v1", timeout=0.5)
    t0 = time.monotonic()
    try:
        result = wgrest.read(cfg)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        listener.close()
        thread.join(5)
    assert elapsed < 3.0, elapsed
    (err,) = result.errors
    assert "timeout" in err.message and result.interfaces == {}


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="0123456789abcdef.:[]%-x ", max_size=40))
def test_plain_endpoint_says_yes_only_where_validate_does(text: str) -> None:
    """The inet_pton shortcut for endpoints never accepts what validate.endpoint refuses."""
    from wgsyncd import validate
    from wgsyncd.wire.wgrest_api import _plain_endpoint

    if _plain_endpoint(text):
        assert validate.endpoint(text, "endpoint") == text
    for sure in ("192.0.2.1:51820", "[fd00::1]:1", "[::ffff:192.0.2.1]:65535"):
        assert _plain_endpoint(sure)
