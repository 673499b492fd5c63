"""`wgsyncd sync` and `wgsyncd restore --to-wgrest` as an operator runs them, with a real
~/.netrc and every proxy variable pointing at a socket we listen on (issue 12 item 7):
the token goes to wgrest, nothing reaches the proxy, no Basic auth is ever sent."""

from __future__ import annotations

import pytest

from tests.beds.host import peers_by_key
from tests.test_restore import recovery, rhost  # noqa: F401  (fixtures)
from tests.test_wgrest_hostile import Listener, write_netrc
from wgsyncd.sources import kernel as kernel_source

pytestmark = pytest.mark.postgres


def test_sync_and_restore_ignore_netrc_and_proxies(rhost, recovery, make_wgrest, monkeypatch):  # noqa: F811
    key_file, public = recovery
    proxy = Listener()
    try:
        write_netrc(rhost.tmp)
        monkeypatch.setenv("HOME", str(rhost.tmp))
        monkeypatch.setenv("NETRC", str(rhost.tmp / ".netrc"))
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.setenv(var, f"http://127.0.0.1:{proxy.port}")
        for var in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(var, raising=False)

        a = rhost.add_interface(5)
        source = make_wgrest("v2", token="tok-env")
        source.load_state(kernel_source.parse_wg_dump(rhost.ifaces[a].dump(), a).values())
        rhost.wgrest_url = source.url
        rhost.write_config('token = "tok-env"\n', recovery_public=public)
        rhost.wgsyncd("sync")
        rows = peers_by_key(rhost.dsn, rhost.host_id)
        assert len(rows) == 5 and all("wgrest" in r.sources for r in rows.values())

        target = make_wgrest("v1", token="tok-restore")
        target.add_device(a)
        token = rhost.tmp / "token"
        token.write_text("tok-restore\n")
        out = rhost.wgsyncd(
            "restore", "--to-wgrest", target.url, "--token-file", str(token), "--recovery-key", key_file
        )
        assert f"{a} (wgrest): 5 peers created" in out.stdout, out.stdout
        assert {r.authorization for r in source.requests} == {"Bearer tok-env"}
        assert {r.authorization for r in target.requests} == {"Bearer tok-restore"}
        assert proxy.connections() == 0
    finally:
        proxy.close()
