"""Review pass over the sources and merge: each test pins one bug that was found and fixed."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from tests.test_kernel import fake_wg
from wgsyncd.config import KernelConfig
from wgsyncd.sources import kernel


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_wg_backend_line_with_wrong_column_count_drops_the_whole_interface(tmp_path: Path) -> None:
    """A malformed line in the middle of an interface must not leave it half-read (first peer only)."""
    pub, p1, p2 = _key(), _key(), _key()
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


def _res(source, iface):
    from wgsyncd.state import SourceResult

    return SourceResult(source, {iface.name: iface})


def test_merge_reports_a_changed_interface_address_even_in_the_same_subnet() -> None:
    """Address keeps its host bits (it is the interface's own IP): 10.0.0.1/24 != 10.0.0.2/24."""
    from datetime import UTC, datetime

    from wgsyncd.merge import merge
    from wgsyncd.state import DriftKind, Interface, Source

    now = datetime(2026, 11, 25, tzinfo=UTC)
    conf = Interface("wg0", addresses=("10.0.0.1/24", "fd00::1/64"))
    rest = Interface("wg0", addresses=("10.0.0.2/24", "fd00:0::1/64"))
    state = merge("h", "h", [_res(Source.CONF, conf), _res(Source.WGREST, rest)], now)
    (drift,) = [d for d in state.drift if d.field == "addresses"]
    assert drift.kind == DriftKind.DIFFERS
    # same addresses spelled differently and in another order are no drift
    same = Interface("wg0", addresses=("fd00:0:0::1/64", "10.0.0.1/24"))
    state = merge("h", "h", [_res(Source.CONF, conf), _res(Source.WGREST, same)], now)
    assert [d for d in state.drift if d.field == "addresses"] == []


def _non_canonical(key: str) -> str:
    """The same 32 bytes spelled with non-zero padding bits in the last base64 digit."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return key[:42] + alphabet[alphabet.index(key[42]) | 1] + "="


def test_a_key_with_non_zero_padding_bits_is_refused_like_wg_does(tmp_path: Path) -> None:
    """wg's key_from_base64 refuses it; accepting it would make one peer look like two."""
    import shutil
    import subprocess

    import pytest

    from wgsyncd.sources.conffiles import ConfParseError, parse_conf
    from wgsyncd.state import StateError, parse_key

    good = _key()
    bad = _non_canonical(good)
    assert base64.b64decode(bad) == base64.b64decode(good)
    if shutil.which("wg"):  # the oracle: the real tool refuses the same spelling
        proc = subprocess.run(["wg", "pubkey"], input=bad, capture_output=True, text=True, check=False)
        assert proc.returncode != 0
    with pytest.raises(StateError) as exc:
        parse_key(bad, "somewhere")
    assert bad not in str(exc.value) and "somewhere" in str(exc.value)
    assert parse_key(good, "x") == good
    text = f"[Interface]\nPrivateKey = {_key()}\n\n[Peer]\nPublicKey = {bad}\nAllowedIPs = 10.0.0.2/32\n"
    with pytest.raises(ConfParseError) as cexc:
        parse_conf(text, str(tmp_path / "wg0.conf"))
    assert "wg0.conf:5 PublicKey" in str(cexc.value) and bad not in str(cexc.value)


def test_wgrest_error_repeats_the_http_reason_phrase_only_scrubbed() -> None:
    """The reason phrase is server text like any other: no token, no key, bounded length."""
    import http.server
    import threading

    from wgsyncd.config import WgrestConfig
    from wgsyncd.sources import wgrest
    from wgsyncd.state import Secret

    token, leaked_key = "t0ken-" + os.urandom(8).hex(), _key()

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


def test_conf_parse_cache_forgets_a_deleted_file_whatever_the_directory_spelling(tmp_path: Path) -> None:
    """The cache holds each file's raw text (private key inside): a deleted file must leave it."""
    from wgsyncd.config import ConfConfig
    from wgsyncd.sources import conffiles

    conf = tmp_path / "wg7.conf"
    conf.write_text(f"[Interface]\nPrivateKey = {_key()}\n")
    for directory in (f"{tmp_path}/", f"{tmp_path}//", str(tmp_path / ".")):
        cfg = ConfConfig(directory=directory)
        parsed: dict = {}  # the daemon's memo.Memo.conf
        assert list(conffiles.read(cfg, None, parsed).interfaces) == ["wg7"]
        assert any(p.endswith("wg7.conf") for p in parsed)
        conf.rename(tmp_path / "wg7.conf.bak")
        assert conffiles.read(cfg, None, parsed).interfaces == {}
        assert not any(p.endswith("wg7.conf") for p in parsed), directory
        (tmp_path / "wg7.conf.bak").rename(conf)


def test_merge_reports_a_preshared_key_present_in_one_source_and_absent_in_another() -> None:
    """No PresharedKey line / no psk in the kernel is a fact ("none"), so psk vs none is drift.

    Without it a psk set or removed at runtime (``wg set ... preshared-key``) never shows.
    """
    from datetime import UTC, datetime

    from wgsyncd.merge import merge
    from wgsyncd.sources.conffiles import parse_conf
    from wgsyncd.sources.kernel import make_peer
    from wgsyncd.state import Interface, Source

    now = datetime(2026, 11, 25, tzinfo=UTC)
    pub = _key()
    conf = parse_conf(f"[Interface]\n\n[Peer]\nPublicKey = {pub}\nAllowedIPs = 10.0.0.2/32\n", "/x/wg0.conf")
    for kernel_psk, conf_iface in ((_key(), conf), (None, None)):
        kpeer = make_peer(pub, kernel_psk, ("10.0.0.2/32",), None, 0, 0, 0, 0)
        kern = Interface("wg0", peers={pub: kpeer})
        if conf_iface is None:  # the other way round: the conf has a psk the kernel lacks
            text = f"[Interface]\n\n[Peer]\nPublicKey = {pub}\nPresharedKey = {_key()}\n"
            conf_iface = parse_conf(text, "/x/wg0.conf")
        state = merge("h", "h", [_res(Source.KERNEL, kern), _res(Source.CONF, conf_iface)], now)
        (drift,) = [d for d in state.drift if d.field == "preshared_key"]
        assert dict(drift.values)["kernel" if kernel_psk is None else "conf"] == "(none)"
    # both without a psk: no drift
    kern = Interface("wg0", peers={pub: make_peer(pub, None, ("10.0.0.2/32",), None, 0, 0, 0, 0)})
    state = merge("h", "h", [_res(Source.KERNEL, kern), _res(Source.CONF, conf)], now)
    assert [d for d in state.drift if d.field == "preshared_key"] == []


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
