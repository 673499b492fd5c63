"""A hostile or broken wgrest, against the real client: every attack fails the source safely.

Issue 12 (items 3, 4, 7): a newline through wgrest never becomes a value; ~/.netrc and
proxy variables never see the token; redirects and foreign Link pages are refused.
Issue 16 (items 4, 7): a huge body, endless pages, a drip cost a failed source and a
bounded amount of memory; a wgrest that answered before and now refuses is an error.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.beds.wgrest_server import ServerBox, make_wgrest_server, random_key
from wgsyncd.config import WgrestConfig
from wgsyncd.sources import wgrest
from wgsyncd.state import Interface, Peer, Secret
from wgsyncd.wire import wgrest_http

TOKEN = "tok-" + "q" * 24


@pytest.fixture
def box() -> Iterator[ServerBox]:
    """A v2 wgrest with a token, one good device (wg0) and its peers."""
    srv = make_wgrest_server("v2", token=TOKEN)
    srv.add_device("wg0", addresses=["10.0.0.1/24"], dns=["192.0.2.53"], table="1234")
    srv.add_peers("wg0", 3, endpoint="192.0.2.9:51820")
    try:
        yield srv
    finally:
        srv.stop()


def cfg(srv: ServerBox, **over: Any) -> WgrestConfig:
    values: dict[str, Any] = {"url": srv.url, "token": Secret(TOKEN), "data_dir": None, "timeout": 5.0}
    values.update(over)
    return WgrestConfig(**values)


class Listener:
    """A TCP socket we control: records whether anything connected (a proxy, an offsite host)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def connections(self) -> int:
        """Connections made so far (accepted and closed here)."""
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    try:
        yield lst
    finally:
        lst.close()


# --------------------------------------------------------------------------- newlines and bad values


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("dns", ["192.0.2.53\nPostUp = touch /tmp/pwned"], "dns[0]"),
        ("table", "1234\nPostUp = touch /tmp/pwned", "table"),
        ("post_up", ["echo ok\nPostUp = touch /tmp/pwned"], "post_up[0]"),
        ("addresses", ["10.0.0.1/24\n"], "addresses[0]"),
        ("dns", ["\x1b]0;owned\x07"], "dns[0]"),
    ],
)
def test_newline_in_a_device_field_fails_that_device_naming_the_field(box, field, value, named):
    box.add_device("wg1", **{field: value})
    box.add_peers("wg1", 2)
    result = wgrest.read(cfg(box))
    assert set(result.interfaces) == {"wg0"}  # the good device still lands
    (err,) = result.errors
    assert err.interface == "wg1" and err.where.endswith(f" {named}"), err
    assert "control character" in err.message or "CIDR" in err.message
    assert "pwned" not in str(err) and "\x1b" not in str(err)


def test_newline_in_a_peer_endpoint_fails_its_device(box):
    box.add_device("wg1")
    box.add_peer("wg1", endpoint="192.0.2.1:51820\nPostUp = touch /tmp/pwned")
    result = wgrest.read(cfg(box))
    assert set(result.interfaces) == {"wg0"}
    (err,) = result.errors
    assert err.interface == "wg1" and err.where.endswith(" endpoint") and "control character" in err.message


def test_a_device_name_with_a_newline_or_a_path_is_a_source_wide_error(box):
    """A name that cannot be an interface cannot confine the error: nothing is removed this cycle."""
    for bad in ("wg9\nPostUp = x", "../../x"):
        box.add_device(bad)
    result = wgrest.read(cfg(box))
    assert set(result.interfaces) == {"wg0"}
    assert len(result.errors) == 2
    assert all(e.interface is None and e.where.endswith(" name") for e in result.errors)
    messages = sorted(e.message for e in result.errors)
    assert "control character" in messages[0] and "not a valid interface name" in messages[1], messages
    assert not any("\n" in str(e) for e in result.errors)


def test_a_key_with_whitespace_is_not_a_key(box):
    box.add_device("wg1")
    box.add_peer("wg1", preshared_key=random_key() + "\n")
    result = wgrest.read(cfg(box))
    (err,) = result.errors
    assert err.interface == "wg1" and err.where.endswith(" preshared_key")


# --------------------------------------------------------------------------- environment, redirects


def write_netrc(home: Path) -> None:
    netrc = home / ".netrc"
    netrc.write_text("machine 127.0.0.1 login netrc-user password netrc-password\n")
    netrc.chmod(0o600)


@pytest.fixture
def hostile_env(tmp_path, monkeypatch, listener) -> Listener:
    """A real ~/.netrc for 127.0.0.1 and every proxy variable pointing at our listener."""
    write_netrc(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{listener.port}")
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    return listener


def test_the_attack_is_real_a_default_session_follows_netrc_and_proxy(box, hostile_env):
    """Control: with the environment above, plain requests sends to the proxy (so the
    tests below would fail without trust_env = False)."""
    with requests.Session() as session, pytest.raises(requests.RequestException):
        session.get(box.url + "/v1/devices/", timeout=1.0)
    assert hostile_env.connections() == 1


def test_source_ignores_netrc_and_proxies(box, hostile_env):
    result = wgrest.read(cfg(box))
    assert result.errors == [] and set(result.interfaces) == {"wg0"}
    assert {r.authorization for r in box.requests} == {f"Bearer {TOKEN}"}
    assert hostile_env.connections() == 0


def test_restore_ignores_netrc_and_proxies(box, hostile_env):
    from wgsyncd.restore import to_wgrest
    from wgsyncd.restore.loading import Loaded

    iface = Interface(name="wg0", peers={})
    pub = random_key()
    iface.peers[pub] = Peer(public_key=pub, allowed_ips=("10.0.0.9/32",))
    loaded = Loaded("h", 1, datetime.now(UTC), {"wg0": iface})
    (changes,) = to_wgrest(loaded, box.url, token=Secret(TOKEN))
    assert changes.created == [pub] and len(changes.deleted) == 3
    assert [r.method for r in box.requests].count("POST") == 1
    assert {r.authorization for r in box.requests} == {f"Bearer {TOKEN}"}  # never Basic
    assert hostile_env.connections() == 0


def test_credentials_in_the_url_are_never_sent(box):
    url = box.url.replace("http://", "http://user:pw@")
    result = wgrest.read(cfg(box, url=url))
    assert result.errors == []
    assert {r.authorization for r in box.requests} == {f"Bearer {TOKEN}"}


def test_a_redirect_is_not_followed_by_the_source(box, listener):
    box.redirect_to = f"http://127.0.0.1:{listener.port}"
    box.fault = "redirect"
    result = wgrest.read(cfg(box, api_version="v2"))
    (err,) = result.errors
    assert "HTTP 302 redirect; not followed" in err.message
    assert listener.connections() == 0


def test_a_redirect_is_not_followed_by_restore(box, listener):
    from wgsyncd.restore import RestoreError, to_wgrest
    from wgsyncd.restore.loading import Loaded

    box.redirect_to = f"http://127.0.0.1:{listener.port}"
    box.fault = "redirect"
    box.fault_path = "/peers/"
    loaded = Loaded("h", 1, datetime.now(UTC), {"wg0": Interface(name="wg0")})
    with pytest.raises(RestoreError, match="redirect; not followed"):
        to_wgrest(loaded, box.url, token=Secret(TOKEN))
    assert listener.connections() == 0


def test_the_client_refuses_any_url_off_its_origin(listener):
    client = wgrest_http.WgrestHttp("http://127.0.0.1:1", Secret(TOKEN), timeout=1.0)
    with pytest.raises(wgrest_http.WgrestProblem, match="not on the configured wgrest server"):
        client.request("GET", f"http://127.0.0.1:{listener.port}/v1/devices/")
    assert listener.connections() == 0


def test_restore_refuses_plain_http_to_another_machine_unless_insecure():
    from wgsyncd.restore import RestoreError, to_wgrest
    from wgsyncd.restore.loading import Loaded

    loaded = Loaded("h", 1, datetime.now(UTC), {"wg0": Interface(name="wg0")})
    with pytest.raises(RestoreError, match=r"plain http:// to another machine.*--insecure"):
        to_wgrest(loaded, "http://192.0.2.1:51822", token=Secret(TOKEN))
    # with --insecure it goes ahead (and here finds nothing listening: TEST-NET-1)
    with pytest.raises(RestoreError) as exc:
        to_wgrest(loaded, "http://192.0.2.1:51822", token=Secret(TOKEN), insecure=True, timeout=0.3)
    assert "plain http://" not in str(exc.value)
    assert wgrest_http.is_loopback("http://[::1]:1/") and wgrest_http.is_loopback("http://localhost:1")


# --------------------------------------------------------------------------- memory and time bounds


def test_huge_body_is_cut_at_the_cap_while_streaming(box):
    box.fault = "huge_body"
    # per_page so high that the byte cap, not the element cap (more elements than asked), stops it
    result = wgrest.read(cfg(box, api_version="v2", max_answer_mib=1, max_read_mib=1, per_page=10**8))
    (err,) = result.errors
    assert "wgrest.max_answer_mib" in err.message and err.interface is None
    assert box.huge_done.wait(10)
    assert box.sent_bytes < 16 * 2**20, box.sent_bytes  # we stopped reading, the server had to stop


def test_endless_pages_stop_at_the_whole_read_cap(box):
    box.fault = "endless_pages"
    box.add_peers("wg0", 200)
    result = wgrest.read(cfg(box, api_version="v2", per_page=100, max_answer_mib=1, max_read_mib=1))
    (err,) = result.errors
    assert "wgrest.max_read_mib" in err.message and err.interface == "wg0"
    pages = [r for r in box.requests if r.path.endswith("/peers/")]
    assert 10 < len(pages) < 200  # about 1 MiB of 100-peer pages, then no more requests


def test_whole_read_deadline_stops_asking(box):
    """Each answer in time, the read as a whole not: the remaining devices are not asked."""
    client = wgrest_http.WgrestHttp(box.url, Secret(TOKEN), timeout=5.0, read_deadline=1e-9)
    with pytest.raises(wgrest_http.WgrestProblem, match="whole wgrest read took more than"):
        client.request("GET", client.url("/v1/devices/"))
    assert box.requests == [] and client.timed_out


def test_compressed_answers_are_refused():
    import http.server
    import threading

    class Gzip(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Gzip)
    thread = threading.Thread(target=httpd.handle_request, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        result = wgrest.read(WgrestConfig(url=url, data_dir=None, api_version="v1", timeout=5.0))
    finally:
        thread.join(5)
        httpd.server_close()
    (err,) = result.errors
    assert "compressed answer (gzip) refused" in err.message


_RSS_PROBE = textwrap.dedent(
    """\
    import json, resource, sys
    from wgsyncd.config import WgrestConfig
    from wgsyncd.sources import wgrest
    from wgsyncd.state import Secret
    url, token = sys.argv[1], sys.argv[2]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = wgrest.read(WgrestConfig(url=url, token=Secret(token), data_dir=None, api_version="v2"))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    errors = [e.message for e in result.errors]
    print(json.dumps({"before_kib": before, "after_kib": after, "errors": errors}))
    """
)


@pytest.mark.parametrize("fault", ["huge_body", "endless_pages"])
def test_a_hostile_wgrest_costs_bounded_memory_with_the_default_caps(box, fault):
    """The shipped caps (16 MiB an answer, 64 MiB a read), measured in a fresh process:
    the peak RSS growth stays far below the unit's MemoryMax headroom."""
    box.fault = fault
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, box.url, TOKEN],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    # refused at a byte cap, or (a page of more elements than it asked for) at the element cap
    (message,) = out["errors"]
    assert "wgrest.max_" in message or "elements on a page that asked for 10000" in message, out
    grown_mib = (out["after_kib"] - out["before_kib"]) / 1024
    assert grown_mib < 400, grown_mib
