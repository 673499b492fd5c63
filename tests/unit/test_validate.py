"""The field validators: what WireGuard, wg-quick and ip take passes; anything that could
add a line, a path or a terminal escape does not, and no message shows the value."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgsyncd import validate
from wgsyncd.validate import Invalid

KEY = base64.b64encode(os.urandom(32)).decode()


@pytest.mark.parametrize("name", ["wg0", "a", "wg-vpn_1.2", "x=y+z", "a" * 15, "..."])
def test_interface_names_wg_quick_accepts(name):
    assert validate.interface_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", "../../x", "a/b", "a" * 16, "wg 0", "wg0\n", "wg0:1", "wgö", None, 1]
)
def test_interface_names_refused(name):
    with pytest.raises(Invalid, match=r"^name: "):
        validate.interface_name(name)


def test_keys_exact():
    assert validate.key(KEY, "k") == KEY
    padding_bits = "A" * 42 + "B="  # decodes to 32 bytes, but wg refuses non-zero padding bits
    url_safe = "-" * 43 + "="
    for bad in (
        KEY + "\n",
        " " + KEY,
        KEY[:-1],
        KEY[:-1] + "A",
        url_safe,
        padding_bits,
        "A" * 43 + "B",
        None,
    ):
        with pytest.raises(Invalid, match=r"^k: not a") as exc:
            validate.key(bad, "k")
        assert KEY[:20] not in str(exc.value)


@pytest.mark.parametrize(
    "endpoint", ["192.0.2.1:51820", "[fd00::1]:0", "[fe80::1%eth0]:65535", "vpn.example.com:443", "h_1-x:1"]
)
def test_endpoints_accepted(endpoint):
    assert validate.endpoint(endpoint) == endpoint


@pytest.mark.parametrize(
    "endpoint",
    [
        "fd00::1:51820",
        "192.0.2.1",
        "192.0.2.1:65536",
        "192.0.2.1:-1",
        "[192.0.2.1]:1",
        "a b:1",
        "-x:1",
        "x:1\n",
        "[fd00::1%a/b]:1",
        ":1",
        "x:+1",
    ],
)
def test_endpoints_refused(endpoint):
    with pytest.raises(Invalid, match=r"^endpoint: "):
        validate.endpoint(endpoint)


def test_cidrs_dns_tables_ranges():
    assert validate.cidr("10.0.0.5/24", "a") == "10.0.0.5/24" and validate.cidr("fd00::/8", "a")
    for bad in ("10.0.0.0/33", " 10.0.0.0/8", "10.0.0.0/8\n", "x", ""):
        with pytest.raises(Invalid):
            validate.cidr(bad, "a")
    assert (
        validate.dns_entry("192.0.2.53")
        and validate.dns_entry("fd00::53")
        and validate.dns_entry("corp.example")
    )
    for bad in ("a b", "a,b", "1.1.1.1\nPostUp=x", "-x", ""):
        with pytest.raises(Invalid, match=r"^dns: "):
            validate.dns_entry(bad)
    for good in ("off", "auto", "main", "1234", "4294967295", "my_table-2"):
        assert validate.table(good) == good
    for bad in ("4294967296", "a b", "x;y", "", "t\n"):
        with pytest.raises(Invalid, match=r"^table: "):
            validate.table(bad)
    assert (
        validate.port(0) == 0
        and validate.fwmark(2**32 - 1)
        and validate.keepalive(65535)
        and validate.mtu(1420)
    )
    for check, bad in (
        (validate.port, 65536),
        (validate.fwmark, 2**32),
        (validate.mtu, 0),
        (validate.port, True),
    ):
        with pytest.raises(Invalid):
            check(bad)


@pytest.mark.parametrize(
    "ch", ["\n", "\r", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\x0b", "\x0c"]
)
def test_text_refuses_every_line_breaking_or_terminal_character(ch):
    with pytest.raises(Invalid, match=r"^post_up: contains a control character"):
        validate.text(f"echo a{ch}b", "post_up")
    assert validate.text("echo\ttab and ünïcode", "post_up")


def test_shown_escapes_control_characters():
    assert validate.shown("a\x1b[2Jb\n") == "a\\x1b[2Jb\\n"
    assert validate.shown("x" * 100).endswith("...") and validate.shown("x" * 100, None) == "x" * 100


def test_conf_path():
    assert validate.conf_path("/etc/wireguard/wg0.conf")
    for bad in ("/etc/wireguard/..", "/etc/passwd", "/etc/wireguard/a b.conf", "/x/wg0.conf\n"):
        with pytest.raises(Invalid, match=r"^conf_path: "):
            validate.conf_path(bad)


@pytest.mark.parametrize(
    "bad",
    ["fe80::1%x,0.0.0.0/0", "fe80::1%x#c/64", "fe80::1%eth0/64", "10.0.0.1/32,10.0.0.2/32", "10.0.0.1 /32"],
)
def test_cidr_refuses_scope_ids_and_list_separators(bad):
    # ipaddress takes any text after "%": a "validated" entry that renders as two entries
    with pytest.raises(Invalid, match=r"^allowed_ips: not an IP address"):
        validate.cidr(bad, "allowed_ips")


@pytest.mark.parametrize("bad", ["fe80::1%x,1.2.3.4", "fe80::1%eth0", "1.1.1.1,8.8.8.8", "a\u3000b"])
def test_dns_entry_refuses_scope_ids_and_list_separators(bad):
    with pytest.raises(Invalid, match=r"^dns: "):
        validate.dns_entry(bad)


@pytest.mark.parametrize("bad", ["[fe80::1%a,b]:1", "[fe80::1%a b]:1", "[fe80::1%a=b]:1", "[fe80::1%a+b]:1"])
def test_endpoint_zone_is_a_plain_name(bad):
    with pytest.raises(Invalid, match=r"^endpoint: "):
        validate.endpoint(bad)


def test_rendered_conf_cannot_gain_a_dns_server_from_a_scope_id():
    from tests.unit.restore.test_render import sample
    from wgsyncd import restore

    iface = sample()
    iface.dns = ("fe80::1%x,1.2.3.4",)
    with pytest.raises(restore.RestoreError, match=r"^interface wg0: dns\[0\]: .*nothing was changed"):
        restore.render_conf(iface)


@pytest.mark.parametrize(
    "ch", ["\u200b", "\u200d", "\u200f", "\u202a", "\u202e", "\u2066", "\u2069", "\ufeff"]
)
def test_text_refuses_bidi_overrides_and_zero_width_characters(ch):
    # Trojan Source: "rm -rf /tmp/x \u202e#/ \u202c" reads differently from what wg-quick runs
    with pytest.raises(Invalid, match=r"^post_up: contains a bidi override or zero-width character"):
        validate.text(f"echo a{ch}b", "post_up")


def test_dry_run_diff_shows_bidi_and_zero_width_characters_escaped():
    from wgsyncd.restore.render import redact_conf_line

    assert validate.shown("a\u202eb\u200bc\ufeff") == "a\\u202eb\\u200bc\\ufeff"
    line = redact_conf_line("PostUp = echo ok \u202e; rm -rf /\u202c\n")
    assert line == "PostUp = echo ok \\u202e; rm -rf /\\u202c\n"
    assert not any(c in line for c in "\u202e\u202c")


# ---------------------------------------------------------------- what the database keeps


def test_bounds_are_the_databases_own():
    """The display bounds stop at what migration 0007's CHECK constraints allow: a value
    past them fails the host's whole transaction, every cycle."""
    from pathlib import Path

    import wgsyncd.store

    sql = (Path(wgsyncd.store.__file__).parent / "migrations" / "0007_fleet_hardening.sql").read_text()
    peers = sql[sql.index("ADD CONSTRAINT peers_text_length") :].split(";")[0]
    interfaces = sql[sql.index("ADD CONSTRAINT interfaces_text_length") :].split(";")[0]
    assert f"length(name) <= {validate.MAX_PEER_NAME} " in peers
    assert f"cardinality(allowed_ips), 0) <= {validate.MAX_ALLOWED_IPS}" in peers
    for table in (peers, interfaces):
        assert f"cardinality(comments), 0) <= {validate.MAX_COMMENT_LINES}" in table
        assert f"array_to_string(comments, '')), 0) <= {validate.MAX_COMMENT_CHARS}" in table


@given(st.text(), st.integers(4, 5000))
def test_a_display_line_passes_restores_check_within_its_bound(value, max_len):
    out = validate.display_line(value, max_len)
    assert validate.text(out, "comment", max_len=max_len) == out
    if value == out:
        assert out is value  # unchanged text is the same object: no copy for 10,000 peers


def test_display_lines_keep_the_leading_lines_within_the_databases_bounds():
    kept, left_out = validate.display_lines(["x"] * (validate.MAX_COMMENT_LINES + 5))
    assert (len(kept), left_out) == (validate.MAX_COMMENT_LINES, 5)
    big = "y" * validate.MAX_TEXT
    kept, left_out = validate.display_lines([big] * 300)
    assert sum(map(len, kept)) <= validate.MAX_COMMENT_CHARS and len(kept) + left_out == 300
    assert left_out == 300 - validate.MAX_COMMENT_CHARS // validate.MAX_TEXT
    # a line past the bound ends the kept ones: no gap in the middle of the comments
    kept, left_out = validate.display_lines(["a", "y" * 5000, "b"])
    assert kept == ("a", "y" * 4093 + "...", "b") and left_out == 0
    assert validate.display_lines(["tab\tok", "esc \x1b[2J", "bidi \u202e"])[0] == (
        "tab\tok",
        "esc \\x1b[2J",
        "bidi \\u202e",
    )
