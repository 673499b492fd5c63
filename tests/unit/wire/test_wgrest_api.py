"""wgsyncd.wire.wgrest_api: the paths both wgrest clients (the source, restore) ask for."""

from __future__ import annotations

import base64

from wgsyncd.wire import wgrest_api
from wgsyncd.wire.wgrest_http import WgrestHttp

KEY = base64.b64encode(bytes([0xFB]) * 32).decode()  # '+' and '/' in standard base64


def client() -> WgrestHttp:
    return WgrestHttp("http://127.0.0.1:1/prefix/", None, timeout=1.0)


def test_peer_pages_are_sorted_by_key_and_the_device_name_is_quoted() -> None:
    """Unsorted, wgrest pages a Go map's order over wireguard-go: peers repeat and go missing."""
    url = wgrest_api.peers_url(client(), "wg 0/x", 250)
    assert url == "http://127.0.0.1:1/prefix/v1/devices/wg%200%2Fx/peers/?per_page=250&sort=pub_key"


def test_a_peer_is_addressed_by_its_url_safe_key() -> None:
    url = wgrest_api.peer_url(client(), "wg0", KEY)
    safe = wgrest_api.std_to_url_safe(KEY)
    assert "+" not in safe and "/" not in safe and wgrest_api.url_safe_to_std(safe) == KEY
    assert url == f"http://127.0.0.1:1/prefix/v1/devices/wg0/peers/{safe.replace('=', '%3D')}/"
    assert wgrest_api.device_url(client(), "wg0") == "http://127.0.0.1:1/prefix/v1/devices/wg0/"


def test_restore_and_the_source_use_the_same_paths_and_parsers() -> None:
    """One home: restore's names are the wire module's, not copies."""
    from wgsyncd.restore import wgrest as restore_wgrest
    from wgsyncd.sources import wgrest as source_wgrest

    assert source_wgrest.peers_url is wgrest_api.peers_url
    assert source_wgrest.parse_go_duration is wgrest_api.parse_go_duration
    assert restore_wgrest._go_seconds("1m30s") == 90
    assert restore_wgrest._go_seconds("bogus") == 0
