"""Test bed: a real wgrest HTTP server (v1 or v2), written by us from wgrest's specs.

A ThreadingHTTPServer on 127.0.0.1 with a real port, speaking wgrest's paths,
JSON shapes, pagination (``Link`` first/last/next/prev as each version builds it),
bearer auth and error bodies, so the wgrest source is tested against real HTTP.
Faults are real too: a 500, a non-JSON body, a 401, a bad key, a failing page 2,
a Link loop, or a connection that is accepted and never answered.

Use the ``wgrest_server`` fixture (v1, no token; set ``.version``/``.token`` before
the first request, or call ``make_wgrest_server`` for other settings), or
``make_wgrest_server(...)`` outside pytest (README demo, benchmark)::

    srv = make_wgrest_server("v2", token="t0ken")
    srv.add_device("wg0", listen_port=51820)
    srv.add_peer("wg0", allowed_ips=["198.51.100.2/32"])
    ...
    srv.stop()
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

try:  # the demo and the benchmark start the server without pytest
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

FAULTS = (
    None,
    "500",
    "garbage",
    "hang",
    "401",
    "bad_key",
    "key_not_text",  # a peer's public_key is a JSON list: not even hashable
    "fail_page_2",
    "link_loop",
    "link_offsite",
    "shift_peers",  # a peer is added at the front after page 1 is served (list shifts)
    "drip",  # headers at once, then the body a byte every 50 ms (never trips a socket timeout)
    "huge_body",  # a 200 whose JSON array never ends (no Content-Length), until the client stops
    "endless_pages",  # every page of peers is new peers, with a Link to one more page
    "redirect",  # a 302 to ``redirect_to`` (default: an address nobody is served at)
)
ZERO_TIME = "0001-01-01T00:00:00Z"
# A value shaped like a key but invalid (43 chars + "="): what the "bad_key" fault
# serves as a preshared key. Tests check it never shows up in errors or logs.
BAD_KEY = "SECRETSECRETSECRETSECRETSECRETSECRETSECRE!="


# --------------------------------------------------------------------------- helpers


def random_key() -> str:
    """A random 32-byte base64 value: a valid-looking public or preshared key."""
    return base64.b64encode(os.urandom(32)).decode()


def private_to_public(private: str) -> str:
    """X25519 public key of a base64 private key (wgsyncd's own derivation)."""
    from wgsyncd.state import Secret, public_key_from_private

    return public_key_from_private(Secret(private))


def url_safe(public_key: str) -> str:
    """wgrest's URL-safe name of a key (``base64.URLEncoding``, padded)."""
    return base64.urlsafe_b64encode(base64.b64decode(public_key)).decode()


def go_duration(seconds: int) -> str:
    """Go's ``time.Duration.String()`` for whole seconds: 0s, 25s, 1m30s, 1h0m0s."""
    if seconds == 0:
        return "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def go_time(when: datetime | None, nanos: int = 0) -> str:
    """Go's RFC 3339 JSON time: zero time for never, nanoseconds trimmed of zeros."""
    if when is None:
        return ZERO_TIME
    base = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{nanos:09d}".rstrip("0") if nanos else ""
    return base + (f".{frac}" if frac else "") + "Z"


def parse_go_duration_seconds(text: str) -> int:
    """Whole seconds of the Go durations this bed writes (server side of PATCH/POST)."""
    total, number = 0, ""
    for ch in text:
        if ch.isdigit():
            number += ch
            continue
        total += int(number or 0) * {"h": 3600, "m": 60, "s": 1}[ch]
        number = ""
    return total


def write_v1_data_dir(
    data_dir: str | Path,
    peer_private_keys: Iterable[str] = (),
    devices: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Write wgrest v1's data dir as wgrest does: ``<dir>/v1/*.conf``, mode 0600.

    ``peer_private_keys`` are the peers' private keys (file name = URL-safe public
    key); ``devices`` maps a device name to ``{"dns": [...], "allowed_ips": [...],
    "host": "..."}`` (client defaults).
    """
    v1 = Path(data_dir) / "v1"
    v1.mkdir(parents=True, exist_ok=True)
    for private in peer_private_keys:
        _write_0600(v1 / f"{url_safe(private_to_public(private))}.conf", f"PrivateKey = {private}\n")
    for name, opts in (devices or {}).items():
        text = (
            f"DNS = {', '.join(opts.get('dns', ()))}\n"
            f"AllowedIPs = {', '.join(opts.get('allowed_ips', ()))}\n"
            f"Host = {opts.get('host', '')}\n"
        )
        _write_0600(v1 / f"{name}.conf", text)
    return v1


def _write_0600(path: Path, text: str) -> None:
    """Create a file readable by its owner only, like wgrest's storage."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


# --------------------------------------------------------------------------- model


@dataclass
class FakePeer:
    """One peer as the server holds it (the kernel's view, like wgctrl's Peer)."""

    public_key: str
    preshared_key: str = ""
    allowed_ips: list[str] = field(default_factory=list)
    endpoint: str = ""
    keepalive: int = 0
    last_handshake: datetime | None = None
    handshake_nanos: int = 0
    rx: int = 0
    tx: int = 0
    private_key: str = ""  # v2 returns it in the create response only


@dataclass
class FakeDevice:
    """One device; v2 fields are simply not served by v1."""

    name: str
    private_key: str
    public_key: str
    listen_port: int = 51820
    firewall_mark: int = 0
    addresses: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    mtu: int = 0
    table: str = ""
    pre_up: list[str] = field(default_factory=list)
    post_up: list[str] = field(default_factory=list)
    pre_down: list[str] = field(default_factory=list)
    post_down: list[str] = field(default_factory=list)
    running: bool = True  # v2 also lists config-only devices (running false, no peers)
    peers: dict[str, FakePeer] = field(default_factory=dict)
    # wgrest lists peers in the order wgctrl returns them unless asked to sort; over
    # wireguard-go that is a Go map's order, new on every request (so on every page)
    unordered: bool = False


@dataclass
class RequestRecord:
    """One request the server saw: what tests assert on (auth sent, pages read)."""

    method: str
    path: str
    query: dict[str, str]
    authorization: str | None


class ServerBox:
    """The controller a test holds: data, knobs and the request log of one server."""

    def __init__(self, version: str = "v1", token: str | None = None, data_dir: str | Path | None = None):
        if version not in ("v1", "v2"):
            raise ValueError("version must be v1 or v2")
        self.version = version
        self.token = token
        self.data_dir = Path(data_dir) if data_dir else None  # v1 writes peer keys here
        self._fault: str | None = None
        self.fault_path: str | None = None  # fault only on paths containing this
        self.fault_limit: int | None = None  # fire this many times, then behave (None = always)
        self.redirect_to: str = "http://203.0.113.9:51822"  # where the "redirect" fault points
        self.sent_bytes = 0  # bytes the "huge_body" fault wrote before the client stopped reading
        self.huge_done = threading.Event()  # set when the "huge_body" answer ended
        self.port = 0
        self._fault_lock = threading.Lock()
        self.devices: dict[str, FakeDevice] = {}
        self.requests: list[RequestRecord] = []
        self.release = threading.Event()  # set at stop: hung handlers give up
        self.hung = threading.Event()  # set when a handler starts hanging
        self.lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def fault(self) -> str | None:
        """The fault every matching request gets (see FAULTS); None = behave."""
        return self._fault

    @fault.setter
    def fault(self, value: str | None) -> None:
        if value not in FAULTS:
            raise ValueError(f"unknown fault {value!r}; one of {FAULTS}")
        self._fault = value

    def fire(self, kind: str, path: str) -> bool:
        """True when fault ``kind`` applies to a request for ``path`` (and count it)."""
        with self._fault_lock:
            if self._fault != kind or (self.fault_path and self.fault_path not in path):
                return False
            if self.fault_limit is not None:
                if self.fault_limit <= 0:
                    return False
                self.fault_limit -= 1
            return True

    # ---- lifecycle

    @property
    def url(self) -> str:
        """Base URL (no path): what goes into WgrestConfig.url."""
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0) -> ServerBox:
        """Bind 127.0.0.1 on ``port`` (0: a free one) and serve in a daemon thread.

        A stopped box can start again on its old port (``port=box.port``): a wgrest
        that goes away and comes back at the same URL.
        """
        self.release.clear()
        box = self

        class Handler(_Handler):
            server_box = box

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._httpd.server_address[1]
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="wgrest-bed", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release hung requests, stop serving and close the socket."""
        self.release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> ServerBox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- data

    def add_device(
        self, name: str, *, private_key: str | None = None, listen_port: int = 51820, **fields: Any
    ) -> FakeDevice:
        """Add a device (a fresh key pair unless ``private_key`` is given)."""
        private = private_key or random_key()
        dev = FakeDevice(
            name=name,
            private_key=private,
            public_key=private_to_public(private),
            listen_port=listen_port,
            **fields,
        )
        with self.lock:
            self.devices[name] = dev
        return dev

    def add_peer(
        self,
        device: str,
        public_key: str | None = None,
        *,
        private_key: str | None = None,
        keepalive: int = 0,
        **fields: Any,
    ) -> FakePeer:
        """Add a peer; its public key is random unless given or derived from ``private_key``.

        With ``private_key`` on a v1 server that has a ``data_dir``, the key is stored
        there like wgrest's create does.
        """
        if public_key is None:
            public_key = private_to_public(private_key) if private_key else random_key()
        peer = FakePeer(public_key=public_key, keepalive=keepalive, **fields)
        with self.lock:
            self.devices[device].peers[public_key] = peer
        if private_key and self.version == "v1" and self.data_dir:
            write_v1_data_dir(self.data_dir, [private_key])
        return peer

    def add_peers(self, device: str, count: int, **fields: Any) -> list[FakePeer]:
        """``count`` peers with random keys and distinct allowed IPs (198.51.100.0/24 + 10/8)."""
        out = []
        for i in range(count):
            ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}/32"
            out.append(self.add_peer(device, allowed_ips=[ip], **fields))
        return out

    def load_state(self, interfaces: Iterable[Any]) -> None:
        """Serve what a list of state.Interface objects describes (peers included).

        A userspace (wireguard-go) interface is served unordered, as wgctrl reads it.
        """
        for iface in interfaces:
            self.add_device(
                iface.name,
                private_key=iface.private_key.reveal() if iface.private_key else None,
                listen_port=iface.listen_port or 0,
                firewall_mark=iface.fwmark or 0,
                addresses=list(iface.addresses or ()),
                dns=list(iface.dns or ()),
                mtu=iface.mtu or 0,
                table=iface.table or "",
            )
            self.devices[iface.name].unordered = iface.implementation == "userspace"
            for peer in iface.peers.values():
                self.add_peer(
                    iface.name,
                    peer.public_key,
                    preshared_key=peer.preshared_key.reveal() if peer.preshared_key else "",
                    allowed_ips=list(peer.allowed_ips or ()),
                    endpoint=peer.endpoint or "",
                    keepalive=peer.persistent_keepalive or 0,
                    last_handshake=peer.latest_handshake,
                    rx=peer.rx_bytes or 0,
                    tx=peer.tx_bytes or 0,
                )

    def paths(self, method: str = "GET") -> list[str]:
        """Paths (with query) requested, in order: for "each page read once" checks."""
        with self.lock:
            return [
                r.path + ("?" + urlencode(sorted(r.query.items())) if r.query else "")
                for r in self.requests
                if r.method == method
            ]

    # ---- JSON shapes

    def peer_json(self, peer: FakePeer, with_private: bool = False) -> dict[str, Any]:
        """A peer the way this version serializes it (v2 uses omitempty)."""
        out: dict[str, Any] = {
            "public_key": peer.public_key,
            "url_safe_public_key": url_safe(peer.public_key),
            "allowed_ips": list(peer.allowed_ips),
            "last_handshake_time": go_time(peer.last_handshake, peer.handshake_nanos),
            "persistent_keepalive_interval": go_duration(peer.keepalive),
            "endpoint": peer.endpoint,
            "receive_bytes": peer.rx,
            "transmit_bytes": peer.tx,
        }
        if peer.preshared_key:
            out["preshared_key"] = peer.preshared_key
        if self.version == "v2":
            if not peer.endpoint:
                del out["endpoint"]
            if with_private and peer.private_key:
                out["private_key"] = peer.private_key
        return out

    def device_json(self, dev: FakeDevice) -> dict[str, Any]:
        """A device the way this version serializes it (v2 holds the private key)."""
        out: dict[str, Any] = {
            "name": dev.name,
            "listen_port": dev.listen_port,
            "public_key": dev.public_key,
            "firewall_mark": dev.firewall_mark,
            "peers_count": len(dev.peers),
            "total_receive_bytes": sum(p.rx for p in dev.peers.values()),
            "total_transmit_bytes": sum(p.tx for p in dev.peers.values()),
        }
        if self.version == "v1":
            out["networks"] = list(dev.addresses)
            return out
        out["private_key"] = dev.private_key
        out["running"] = dev.running
        optional = {
            "addresses": dev.addresses,
            "dns": dev.dns,
            "mtu": dev.mtu,
            "table": dev.table,
            "pre_up": dev.pre_up,
            "post_up": dev.post_up,
            "pre_down": dev.pre_down,
            "post_down": dev.post_down,
        }
        out.update({k: v for k, v in optional.items() if v})
        if not dev.firewall_mark:
            del out["firewall_mark"]
        return out


# --------------------------------------------------------------------------- sorting

_SORT_KEYS: dict[str, Callable[[FakePeer], Any]] = {
    "pub_key": lambda p: p.public_key,
    "receive_bytes": lambda p: p.rx,
    "transmit_bytes": lambda p: p.tx,
    "total_bytes": lambda p: p.rx + p.tx,
    "last_handshake_time": lambda p: p.last_handshake or datetime.min.replace(tzinfo=UTC),
}


def _sort_peers(peers: list[FakePeer], field_name: str, version: str) -> bool:
    """wgrest's ``sort``: a field, ``-`` for descending (v1 knows no ``-pub_key``).

    False for a field wgrest would refuse (v1 answers 400; v2 ignores it, so True).
    """
    desc = field_name.startswith("-")
    key = _SORT_KEYS.get(field_name.removeprefix("-"))
    if key is None or (version == "v1" and field_name == "-pub_key"):
        return version != "v1"
    peers.sort(key=key, reverse=desc)
    return True


# --------------------------------------------------------------------------- pagination


def _page_v1(items: list[Any], path: str, query: dict[str, str]) -> tuple[list[Any], str]:
    """wgrest v1 (beego paginator): 1-based, page<=0 -> 1, page past the end -> last.

    Links are relative, ``page`` is dropped for page 1, the query is re-encoded
    sorted (Go's url.Values.Encode), joined with "," in order first,last,next,prev.
    """
    try:
        per = int(query.get("per_page", "100"))
    except ValueError:
        per = 100
    per = per if per > 0 else 10
    total_pages = math.ceil(len(items) / per)
    try:
        page = int(query.get("page", "0"))
    except ValueError:
        page = 0
    page = min(page, total_pages)
    page = max(page, 1)

    def link(p: int) -> str:
        values = dict(query)
        if p == 1:
            values.pop("page", None)
        else:
            values["page"] = str(p)
        qs = urlencode(sorted(values.items()))
        return path + ("?" + qs if qs else "")

    links = [f'<{link(1)}>; rel="first"', f'<{link(total_pages)}>; rel="last"']
    if page < total_pages:
        links.append(f'<{link(page + 1)}>; rel="next"')
    if page > 1:
        links.append(f'<{link(page - 1)}>; rel="prev"')
    begin = min((page - 1) * per, len(items))
    return items[begin : min(begin + per, len(items))], ",".join(links)


def _page_v2(items: list[Any], path: str, query: dict[str, str]) -> tuple[list[Any], str]:
    """wgrest v2: 0-based; no Link at all for an empty list; joined with ", "
    in order first,last,prev,next; page and per_page always present."""
    try:
        per = int(query.get("per_page", "100"))
    except ValueError:
        per = 100
    try:
        page = int(query.get("page", "0"))
    except ValueError:
        page = 0
    per = per if per > 0 else 100
    page = max(page, 0)
    begin = min(page * per, len(items))
    chunk = items[begin : min(begin + per, len(items))]
    if not items:
        return chunk, ""
    total_pages = (len(items) + per - 1) // per
    rest = {k: v for k, v in query.items() if k not in ("page", "per_page")}

    def link(p: int) -> str:
        return path + "?" + urlencode(sorted({**rest, "page": str(p), "per_page": str(per)}.items()))

    links = [f'<{link(0)}>; rel="first"', f'<{link(total_pages - 1)}>; rel="last"']
    if page > 0:
        links.append(f'<{link(page - 1)}>; rel="prev"')
    if page < total_pages - 1:
        links.append(f'<{link(page + 1)}>; rel="next"')
    return chunk, ", ".join(links)


# --------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    """Routes wgrest's paths onto the ServerBox; one instance per request."""

    server_box: ServerBox
    protocol_version = "HTTP/1.1"  # keep-alive, like Go's net/http

    def setup(self) -> None:
        """TCP_NODELAY like Go's net/http: else Nagle + delayed ACK add ~40 ms a page."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log (tests read ``.requests`` instead)."""

    # ---- plumbing

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        """Send a JSON (or raw bytes) answer with Content-Length, so keep-alive works."""
        raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=UTF-8")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if raw:
            self.wfile.write(raw)

    def _error(self, status: int, code: str, message: str, detail: str = "") -> None:
        """wgrest's error body."""
        self._send(status, {"code": code, "message": message, "detail": detail})

    def _body(self) -> Any:
        """The request's JSON body (or None)."""
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return None
        return json.loads(self.rfile.read(length))

    def _dispatch(self, method: str) -> None:
        """Record, apply faults and auth, then route."""
        box = self.server_box
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        with box.lock:
            box.requests.append(RequestRecord(method, parts.path, query, self.headers.get("Authorization")))
        body_bytes = self._body_safe() if method in ("POST", "PATCH") else None
        if self._fault(parts.path, query):
            return
        if parts.path == "/version" and box.version == "v2":
            self._send(200, {"wgrest": "v2.0.0-alpha.1", "wireguard": "v1.0.20210914"})
            return
        if not parts.path.startswith("/v1/"):
            self._error(404, "not_found", "Not Found")
            return
        if box.token is not None and self.headers.get("Authorization") != f"Bearer {box.token}":
            message = (
                "missing authorization header" if not self.headers.get("Authorization") else "invalid token"
            )
            self._error(401, "unauthorized", message)
            return
        self._route(method, parts.path, query, body_bytes)

    def _body_safe(self) -> Any:
        """Parse the body, answering 400 later on garbage (kept as an exception value)."""
        try:
            return self._body()
        except ValueError as exc:
            return exc

    def _fault(self, path: str, query: dict[str, str]) -> bool:
        """Apply the configured fault to this request; True when it answered already."""
        box = self.server_box
        second = "2" if box.version == "v1" else "1"
        if box.fire("500", path):
            self._error(500, "internal_error", "wireguard: failed to get device")
        elif box.fire("garbage", path):
            self._send(200, b"<html>this is not json")
        elif box.fire("401", path):
            self._error(401, "unauthorized", "invalid token")
        elif box.fire("drip", path):
            self._drip()
        elif box.fire("huge_body", path):
            self._huge_body()
        elif box.fire("redirect", path):
            self._send(302, b"", {"Location": box.redirect_to + path})
        elif box.fire("hang", path):
            box.hung.set()
            box.release.wait()
            self.close_connection = True
        elif path.endswith("/peers/") and query.get("page") == second and box.fire("fail_page_2", path):
            self._error(500, "internal_error", "failed on page 2")
        else:
            return False  # bad_key, key_not_text, link_* and shift_peers change a good answer instead
        return True

    def _drip(self) -> None:
        """A slow server: valid headers, then a trickle of body until stopped or done."""
        body = b'[{"name": "wg0"}]' + b" " * 10_000
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(len(body)):
            if self.server_box.release.wait(0.05):
                break  # the bed is stopping
            try:
                self.wfile.write(body[i : i + 1])
            except OSError:
                break  # the client gave up: that is the point
        self.close_connection = True

    def _huge_body(self) -> None:
        """A hostile server: an answer that never ends, written as fast as the client reads."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        item = b'{"public_key": "' + b"A" * 43 + b'=", "allowed_ips": []}, '
        chunk = b"[" + item * (65536 // len(item))
        sent = 0
        while not self.server_box.release.is_set() and sent < 2**31:
            try:
                self.wfile.write(chunk)
            except OSError:
                break  # the client gave up: that is the point
            sent += len(chunk)
            chunk = chunk.lstrip(b"[")
        self.server_box.sent_bytes = sent
        self.server_box.huge_done.set()
        self.close_connection = True

    # ---- routes

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> None:
        """The /v1 API."""
        box = self.server_box
        segs = [unquote(s) for s in path.strip("/").split("/")][1:]  # drop "v1"
        if segs == ["version"] and box.version == "v2" and method == "GET":
            self._send(200, {"wgrest": "v2.0.0-alpha.1", "wireguard": "v1.0.20210914"})
            return
        if not segs or segs[0] != "devices":
            self._error(404, "not_found", "Not Found")
            return
        if isinstance(body, Exception):
            self._error(400, "invalid_request", "body is not JSON")
            return
        with box.lock:
            if len(segs) == 1:
                if method == "GET":
                    self._list(list(box.devices.values()), path, query, box.device_json)
                elif method == "POST" and box.version == "v1":
                    self._send(501, None)
                else:
                    self._error(405, "method_not_allowed", "Method Not Allowed")
                return
            dev = box.devices.get(segs[1])
            if dev is None:
                self._error(404, "device_not_found", f"device {segs[1]!r} not found")
                return
            if len(segs) == 2 and method == "GET":
                self._send(200, box.device_json(dev))
            elif len(segs) == 3 and segs[2] == "peers":
                self._peers(dev, method, path, query, body)
            elif len(segs) == 4 and segs[2] == "peers":
                self._peer(dev, method, segs[3], body)
            else:
                self._error(404, "not_found", "Not Found")

    def _list(self, items: list[Any], path: str, query: dict[str, str], render: Any) -> None:
        """A paginated list answer with the version's Link header.

        Only the page served is rendered, so 10,000 peers at 100 a page cost the
        bed O(n), not O(n^2) (the benchmark measures the client, not the bed).
        """
        box = self.server_box
        pager = _page_v1 if box.version == "v1" else _page_v2
        page, link = pager(items, path, query)
        chunk = [render(item) for item in page]
        if chunk and path.endswith("/peers/") and box.fire("bad_key", path):
            chunk[-1]["preshared_key"] = BAD_KEY
        if chunk and path.endswith("/peers/") and box.fire("key_not_text", path):
            chunk[-1]["public_key"] = [chunk[-1]["public_key"]]
        if box.fire("link_loop", path):
            first = "1" if box.version == "v1" else "0"
            qs = urlencode(sorted({**query, "page": first}.items()))
            link = f'<{path}?{qs}>; rel="next"'
        if path.endswith("/peers/") and box.fire("endless_pages", path):
            page_no = int(query.get("page") or 1)
            count = max(1, min(int(query.get("per_page") or 100), 1000))
            chunk = [box.peer_json(FakePeer(random_key(), allowed_ips=["10.9.0.1/32"])) for _ in range(count)]
            qs = urlencode(sorted({**query, "page": str(page_no + 1)}.items()))
            link = f'<{path}?{qs}>; rel="next"'
        if box.fire("link_offsite", path):
            link = f'<http://203.0.113.9:51822{path}?page=2>; rel="next"'  # TEST-NET-3, never reached
        self._send(200, chunk, {"Link": link} if link else None)

    def _peers(self, dev: FakeDevice, method: str, path: str, query: dict[str, str], body: Any) -> None:
        """GET (list) and POST (create) on /v1/devices/{name}/peers/."""
        box = self.server_box
        if method == "GET":
            peers = list(dev.peers.values())
            if query.get("q"):
                peers = [p for p in peers if any(query["q"] in ip for ip in p.allowed_ips)]
            if dev.unordered:
                random.shuffle(peers)
            if query.get("sort") and not _sort_peers(peers, query["sort"], box.version):
                self._error(400, "request_params_error", f"unknown sort field {query['sort']}")
                return
            self._list(peers, path, query, box.peer_json)
            first_page = query.get("page", "0") in ("", "0", "1" if box.version == "v1" else "0")
            if first_page and box.fire("shift_peers", path):
                # a key that sorts first, so it shifts every later page whatever the sort
                lowest = min(dev.peers, default="~")
                key = random_key()
                while key >= lowest:
                    key = random_key()
                new = FakePeer(public_key=key, allowed_ips=["192.0.2.99/32"])
                dev.peers = {new.public_key: new, **dev.peers}
            return
        if method != "POST":
            self._error(405, "method_not_allowed", "Method Not Allowed")
            return
        body = body or {}
        private = body.get("private_key") or ""
        public = body.get("public_key") or ""
        if not public:
            private = private or random_key()
            public = private_to_public(private)
        peer = FakePeer(public_key=public, private_key=private)
        self._apply(peer, body)
        dev.peers[public] = peer
        if private and box.version == "v1" and box.data_dir:
            write_v1_data_dir(box.data_dir, [private])
        self._send(201, box.peer_json(peer, with_private=True))

    def _peer(self, dev: FakeDevice, method: str, safe_key: str, body: Any) -> None:
        """GET/PATCH/DELETE on /v1/devices/{name}/peers/{urlSafePubKey}/."""
        box = self.server_box
        try:
            raw = base64.urlsafe_b64decode(safe_key)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            self._error(400, "request_params_error", "wrong public key")
            return
        peer = dev.peers.get(base64.b64encode(raw).decode())
        if peer is None:
            self._error(404, "peer_not_found", "peer not found")
            return
        if method == "GET":
            self._send(200, box.peer_json(peer))
        elif method == "PATCH":
            self._apply(peer, body or {})
            if (body or {}).get("private_key") and box.version == "v1" and box.data_dir:
                write_v1_data_dir(box.data_dir, [body["private_key"]])
            self._send(200, box.peer_json(peer))
        elif method == "DELETE":
            del dev.peers[peer.public_key]
            self._send(200, box.peer_json(peer))
        else:
            self._error(405, "method_not_allowed", "Method Not Allowed")

    @staticmethod
    def _apply(peer: FakePeer, body: dict[str, Any]) -> None:
        """PeerCreateOrUpdateRequest fields onto a peer."""
        if body.get("preshared_key") is not None:
            peer.preshared_key = body["preshared_key"]
        if body.get("allowed_ips") is not None:
            peer.allowed_ips = list(body["allowed_ips"])
        if body.get("endpoint"):
            peer.endpoint = body["endpoint"]
        if body.get("persistent_keepalive_interval"):
            peer.keepalive = parse_go_duration_seconds(body["persistent_keepalive_interval"])

    def do_GET(self) -> None:
        """GET."""
        self._dispatch("GET")

    def do_POST(self) -> None:
        """POST."""
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        """PATCH."""
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        """DELETE."""
        self._dispatch("DELETE")


# --------------------------------------------------------------------------- entry points


def make_wgrest_server(
    version: str = "v1", token: str | None = None, data_dir: str | Path | None = None
) -> ServerBox:
    """A started server (call ``.stop()``, or use it as a context manager)."""
    return ServerBox(version, token, data_dir).start()


def _fixture(func: Any) -> Any:
    """pytest.fixture when pytest is there; the plain function otherwise."""
    return pytest.fixture(func) if pytest is not None else func


@_fixture
def wgrest_server() -> Iterator[ServerBox]:
    """A v1 wgrest without auth; change ``.version``/``.token``/``.fault`` freely."""
    box = make_wgrest_server("v1")
    try:
        yield box
    finally:
        box.stop()


@_fixture
def make_wgrest() -> Iterator[Any]:
    """A factory fixture: ``make_wgrest("v2", token=...)``; every server stops at teardown."""
    boxes: list[ServerBox] = []

    def factory(
        version: str = "v1", token: str | None = None, data_dir: str | Path | None = None
    ) -> ServerBox:
        box = make_wgrest_server(version, token, data_dir)
        boxes.append(box)
        return box

    try:
        yield factory
    finally:
        for box in boxes:
            box.stop()


def main(argv: list[str] | None = None) -> int:
    """Serve a populated fake wgrest until interrupted (README demo, manual checks)."""
    import argparse

    parser = argparse.ArgumentParser(description="a fake wgrest (v1 or v2) on 127.0.0.1")
    parser.add_argument("--api", choices=("v1", "v2"), default="v2")
    parser.add_argument("--token", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--peers", type=int, default=3, help="peers per device")
    args = parser.parse_args(argv)
    box = make_wgrest_server(args.api, token=args.token, data_dir=args.data_dir)
    for d in range(args.devices):
        box.add_device(f"wg{d}", listen_port=51820 + d, addresses=[f"10.{d}.0.1/16"])
        box.add_peers(f"wg{d}", args.peers, keepalive=25)
    print(f"wgrest {args.api} at {box.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        box.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
