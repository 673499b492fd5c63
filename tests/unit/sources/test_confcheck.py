"""sources/confcheck.py: the statement of when wgconfig fails, against wgconfig itself.

The conf source warns "wgconfig cannot parse this file" without running wgconfig
(too slow at 10,000 peers); these tests hold that statement equal to the library's
parser on the lines that can break it, in every placement and spelling.
"""

from __future__ import annotations

import io
import logging
import re

import pytest
import wgconfig
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wgsyncd.sources import confcheck
from wgsyncd.sources.conffiles import parse_conf

KEY_A = "A" * 42 + "E="
KEY_B = "B" * 42 + "E="
LINES = [
    "[Interface]",
    "[Peer]",
    "[PEER]",
    "[ Peer ]",
    "[peer",
    "[Peer]]",
    "[Peer] # named",
    "[Foo]",
    "[in line 7]",
    "[pe#! ",
    "#! [Peer]",
    "#! [Foo]",
    "##! [Peer]",
    "\x1c[Peer]",
    "\u00a0[Peer]",
    "\u2028",
    f"PublicKey = {KEY_A}",
    f"PublicKey = {KEY_B} # b",
    f"#! PublicKey = {KEY_A}",
    f"Public#! Key = {KEY_B}",
    "PublicKey = a, b",
    "PublicKey=1",
    "publickey = x",
    " PublicKey\t= y,",
    "PublicKey\x1c= 1",
    "_index_firstline = 3",
    "_index_lastline = 3",
    "_rawdata = x",
    "MTU = \u00bd",
    "MTU = \u0663",
    "MTU = 1420",
    "AllowedIPs = 10.0.0.1/32, 10.0.0.2/32",
    "",
    "  ",
    "# comment",
    "#!",
    "#! ",
    "x #! ",
    "= value",
    "no equals sign",
]


def wgconfig_says(text: str) -> str | None:
    """What the real library raises on text (the conf source's catch), or None."""
    wgc = wgconfig.WGConfig()
    wgc.read_from_fileobj(io.StringIO(text, newline="\n"))
    try:
        wgc.get_peers(keys_only=False, include_disabled=True, include_details=True)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        return str(exc)
    return None


def where(message: str | None) -> str | None:
    """The line the warning names (``in line N``), the file alone, or no warning."""
    if message is None:
        return None
    m = re.search(r"in line (\d+)", message)
    return m.group(1) if m else "file"


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    lines=st.lists(st.sampled_from(LINES), max_size=12),
    eol=st.sampled_from(["\n", "\r\n"]),
    final=st.booleans(),
)
def test_failure_rule_equals_wgconfig(lines: list[str], eol: str, final: bool) -> None:
    text = eol.join(lines) + (eol if final else "")
    assert where(confcheck.wgconfig_error(text)) == where(wgconfig_says(text)), repr(text)


@pytest.mark.parametrize(
    "text",
    [
        f"[Interface]\nListenPort = 1\n\n[Peer]\nPublicKey = {KEY_A}\n\n[Peer]\nPublicKey = {KEY_B}\n",
        f"[Interface]\n[Peer]\nPublicKey = {KEY_A}\nPublicKey = {KEY_B}\n[Peer]\n",
        f"[Interface]\n[Peer]\nPublicKey = {KEY_A}, {KEY_B}\n",
        "[Interface]\nPublicKey = a\nPublicKey = b\n[Peer]\n",
        "[Interface]\n[ Peer ]\n",
        "[Interface]\n[Peer]\n[Foo]\n",
        "PublicKey = a\nPublicKey = b\n[Interface]\n",
    ],
)
def test_fast_path_on_plain_ascii_files(text: str) -> None:
    """Plain ASCII files without ``#! `` take the regex way; it answers as wgconfig does."""
    assert text.isascii() and "#! " not in text
    assert where(confcheck._fast(text)) == where(wgconfig_says(text))
    assert where(confcheck._full(text)) == where(wgconfig_says(text))


@pytest.mark.parametrize("debug", [False, True])
def test_warning_is_the_same_with_and_without_debug(debug: bool, caplog: pytest.LogCaptureFixture) -> None:
    """Debug logging runs wgconfig itself; the warning the operator sees does not change."""
    text = f"[Interface]\nListenPort = 1\n#! [Foo]\n#! PublicKey = {KEY_A}\n[ Peer ]\nPublicKey = {KEY_B}\n"
    caplog.set_level(logging.DEBUG if debug else logging.INFO, logger="wgsyncd.sources.confcheck")
    parse_conf(text, "/etc/wireguard/wg0.conf")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "/etc/wireguard/wg0.conf:3: wgconfig cannot parse this file (wg-quick can); "
        "tools using wgconfig cannot edit it"
    ]


def test_debug_compares_peers_with_wgconfig(caplog: pytest.LogCaptureFixture) -> None:
    """A broken disabled block is no peer to wg-quick's reading but one to wgconfig: said at debug."""
    text = f"[Interface]\nListenPort = 1\n[Peer]\nPublicKey = {KEY_A}\n\n#! [Peer]\n#! PublicKey = nokey\n"
    caplog.set_level(logging.DEBUG, logger="wgsyncd.sources.confcheck")
    iface = parse_conf(text, "/etc/wireguard/wg0.conf")
    assert list(iface.peers) == [KEY_A]
    debug = [r.getMessage() for r in caplog.records if r.name == "wgsyncd.sources.confcheck"]
    assert debug == ["/etc/wireguard/wg0.conf: wgconfig sees 2 peers, wg-quick reading 1"]
