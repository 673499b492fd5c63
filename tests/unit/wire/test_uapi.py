"""wgsyncd.wire.uapi: the one control-socket exchange that reading and restore both use.

A real Unix stream socket answered by a thread stands in for wireguard-go's control
socket (the integration tests use wireguard-go itself): what comes back for ``get``
and ``set``, a daemon that refuses, one that is gone, one that stops mid-answer.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from wgsyncd.canonical import ZERO_KEY_B64, ZERO_KEY_HEX
from wgsyncd.wire import uapi
from wgsyncd.wire.values import InterfaceReadError

KEY = base64.b64encode(bytes(range(32))).decode()


class Daemon:
    """Accepts ``times`` connections, records each request, answers ``reply`` and closes."""

    def __init__(self, path: Path, reply: bytes, times: int = 1) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.reply = reply
        self.request = b""
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, args=(times,), daemon=True)
        self.thread.start()

    def _serve(self, times: int) -> None:
        for _ in range(times):
            conn, _ = self.server.accept()
            with conn:
                self.request = b""
                while not self.request.endswith(b"\n\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    self.request += chunk
                self.requests.append(self.request)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up first
                    conn.sendall(self.reply)

    def close(self) -> None:
        self.thread.join(5)
        self.server.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[callable]:
    made: list[Daemon] = []

    def start(reply: bytes, times: int = 1) -> tuple[str, Daemon]:
        path = tmp_path / "wgu0.sock"
        made.append(Daemon(path, reply, times))
        return str(path), made[-1]

    yield start
    for d in made:
        d.close()


def test_get_sends_the_get_request_and_parses_the_reply(daemon) -> None:
    hex_key = bytes(range(32)).hex()
    path, d = daemon(f"listen_port=51820\npublic_key={hex_key}\nallowed_ip=10.0.0.1/32\nerrno=0\n\n".encode())
    iface = uapi.parse_reply("wgu0", uapi.get(path, 5.0), {}, {})
    assert d.request == b"get=1\n\n"
    assert iface.listen_port == 51820 and list(iface.peers) == [KEY]
    assert iface.peers[KEY].allowed_ips == ("10.0.0.1/32",)


def test_read_walks_the_reply_as_it_arrives_and_keeps_unchanged_peers(daemon) -> None:
    """The source's read: one exchange, the reply parsed block by block (a reply much larger
    than one socket read), peers whose block did not change are last read's objects."""
    peers = "".join(
        f"public_key={bytes([i]).hex() * 32}\nallowed_ip=10.0.{i}.0/24\ntx_bytes={i}\n" for i in range(1, 250)
    )
    reply = f"listen_port=51820\n{peers}errno=0\n\n".encode()
    path, d = daemon(reply, times=2)
    fresh: dict = {}
    first = uapi.read("wgu0", path, 5.0, {}, fresh)
    assert first == uapi.parse_uapi("wgu0", reply.decode()) and len(first.peers) == 249
    again = uapi.read("wgu0", path, 5.0, fresh, {})
    assert all(again.peers[k] is p for k, p in first.peers.items())
    assert d.requests == [b"get=1\n\n", b"get=1\n\n"]


def test_read_of_a_bad_reply_asks_again_and_names_the_line(daemon) -> None:
    """The walk keeps no more than the block arriving, so for the line parser's message (the
    bad line's number) the reply is asked for once more and read whole."""
    hex_key = bytes(range(32)).hex()
    path, d = daemon(f"listen_port=1\npublic_key={hex_key}\nrx_bytes=lots\nerrno=0\n\n".encode(), times=2)
    with pytest.raises(InterfaceReadError, match="line 3: bad value for rx_bytes"):
        uapi.read("wgu0", path, 5.0, {}, {})
    assert len(d.requests) == 2


def test_the_second_ask_shares_the_deadline_and_the_error_names_the_setting(tmp_path: Path) -> None:
    """The walk gives up on the first reply; the daemon then accepts the second ask and never
    answers. The read ends at the one deadline, and says the configured timeout (0.5 s), not
    what was left of it for the second ask."""
    path = tmp_path / "wgu0.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(2)
    release = threading.Event()
    hex_key = bytes(range(32)).hex()

    def serve() -> None:
        first, _ = server.accept()
        with first:
            first.recv(64)
            first.sendall(f"public_key={hex_key}\nrx_bytes=lots\nerrno=0\n\n".encode())
        second, _ = server.accept()
        with second:
            second.recv(64)
            release.wait(10)  # silent until the client gave up

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with pytest.raises(InterfaceReadError, match=r"^no answer within 0\.5 s$"):
            uapi.read("wgu0", str(path), 0.5, {}, {})
    finally:
        release.set()
        thread.join(5)
        server.close()


def test_set_sends_the_request_and_accepts_errno_0(daemon) -> None:
    path, d = daemon(b"errno=0\n\n")
    request = f"set=1\npublic_key={uapi.hex_key(KEY)}\nremove=true\n\n".encode()
    uapi.set_device(path, request, 5.0)
    assert d.request == request


def test_set_refused_names_the_errno(daemon) -> None:
    path, _d = daemon(b"errno=22\n\n")
    with pytest.raises(uapi.SetRefused, match=r"errno=22 \(EINVAL\)"):
        uapi.set_device(path, b"set=1\n\n", 5.0)


def test_an_answer_cut_short_is_an_error_for_both(daemon) -> None:
    path, _d = daemon(b"errno=")
    with pytest.raises(InterfaceReadError, match="connection closed before the reply was complete"):
        uapi.set_device(path, b"set=1\n\n", 5.0)


def test_an_endless_reply_is_refused_at_the_size_cap(daemon, monkeypatch) -> None:
    """A daemon streaming without the terminating empty line cannot take the agent's memory."""
    monkeypatch.setattr(uapi, "MAX_REPLY", 1 << 20)
    path, _d = daemon(b"allowed_ip=10.0.0.0/8\n" * ((3 << 20) // 22))
    with pytest.raises(InterfaceReadError, match="reply larger than 1 MiB without its end"):
        uapi.get(path, 5.0)


def test_nobody_listening_is_a_stale_socket(tmp_path: Path) -> None:
    path = tmp_path / "gone.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()  # the file stays, nobody listens: what a killed wireguard-go leaves
    with pytest.raises(uapi.StaleSocket):
        uapi.get(str(path), 5.0)
    assert uapi.list_interfaces(str(tmp_path)) == ["gone"]


def test_hex_key_is_the_sockets_spelling_of_a_base64_key() -> None:
    assert uapi.hex_key(KEY) == bytes(range(32)).hex()
    assert uapi.hex_key(ZERO_KEY_B64) == ZERO_KEY_HEX  # canonical.py: the all-zero key in both spellings
