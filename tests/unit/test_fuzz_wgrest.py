"""Issue 16 item 3: fuzzed wgrest answer bodies (API v1 and v2), page JSON to model.

Two generators, as in test_fuzz_parsers.py: devices and peers built from a model and
rendered the way the wgrest test server renders them (so the parse must equal the
model), and the same objects mutated (fields dropped, added or given the wrong JSON
type, long values, control characters, bad base64, lone surrogates, JSON text cut or
flipped). Then the only allowed outcomes are WgrestProblem naming the field (never a
key) or a parse whose every value validate.py takes. Sizes: tests/fuzzing.py.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.beds.wgrest_server import FakeDevice, FakePeer, ServerBox
from tests.fuzzing import FUZZ, count
from wgsyncd import validate
from wgsyncd.sources.wgrest import WgrestProblem, parse_device, parse_peer
from wgsyncd.wire import jsonarray
from wgsyncd.wire.wgrest_http import Answer

WHERE = "http://127.0.0.1:8000/v1/devices/?per_page=100 [0]"
PEER_FIELDS = {
    "public_key",
    "url_safe_public_key",
    "preshared_key",
    "allowed_ips",
    "last_handshake_time",
    "persistent_keepalive_interval",
    "endpoint",
    "receive_bytes",
    "transmit_bytes",
    "private_key",
}
DEVICE_FIELDS = {
    "name",
    "listen_port",
    "public_key",
    "private_key",
    "firewall_mark",
    "networks",
    "addresses",
    "dns",
    "mtu",
    "table",
    "pre_up",
    "post_up",
    "pre_down",
    "post_down",
    "running",
    "peers_count",
    "total_receive_bytes",
    "total_transmit_bytes",
}
KEY_FIELDS = {"public_key", "preshared_key", "private_key"}

keys = st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode())
v4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
v6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)
# CIDRs as Go's IPNet.String() prints them (network) and as wg-quick keeps them (host bits set)
cidrs = st.one_of(
    st.tuples(v4, st.integers(0, 32)).map(lambda t: str(ipaddress.ip_network(t, strict=False))),
    st.tuples(v6, st.integers(0, 128)).map(lambda t: str(ipaddress.ip_network(t, strict=False))),
    st.tuples(v4, st.integers(0, 32)).map(lambda t: str(ipaddress.ip_interface(t))),
    st.tuples(v6, st.integers(0, 128)).map(lambda t: str(ipaddress.ip_interface(t))),
)
endpoints = st.one_of(
    st.just(""),
    st.tuples(v4, st.integers(0, 65535)).map(lambda t: f"{t[0]}:{t[1]}"),
    st.tuples(v6, st.integers(0, 65535)).map(lambda t: f"[{t[0]}]:{t[1]}"),
)
# a real handshake: any second Go can print after the epoch, with nanoseconds
handshakes = st.one_of(
    st.none(),
    st.tuples(st.integers(1, 253402300799), st.integers(0, 999_999_999)),
)
ifnames = st.text("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789_=+.-", min_size=1, max_size=15).filter(
    lambda n: n not in (".", "..")
)
hostnames = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,30}", fullmatch=True)
# hook text: any printable unicode (names, quotes, %i), nothing validate.text refuses
hooks = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Cf")) | st.just("\t"), max_size=60
).filter(lambda s: validate.text(s, "hook") == s)
tables = st.sampled_from(["", "off", "auto", "main", "1234", "4294967295", "vpn_routes"])


@dataclass
class MPeer:
    public: str
    psk: str
    allowed: list[str]
    endpoint: str
    keepalive: int
    hs: tuple[int, int] | None
    rx: int
    tx: int
    private: str = ""


@dataclass
class MDevice:
    name: str
    public: str
    private: str
    port: int
    fwmark: int
    addresses: list[str]
    dns: list[str] = field(default_factory=list)
    mtu: int = 0
    table: str = ""
    pre_up: list[str] = field(default_factory=list)
    post_up: list[str] = field(default_factory=list)
    pre_down: list[str] = field(default_factory=list)
    post_down: list[str] = field(default_factory=list)


peers = st.builds(
    MPeer,
    keys,
    st.one_of(st.just(""), keys),
    st.lists(cidrs, max_size=6),
    endpoints,
    st.integers(0, 65535),
    handshakes,
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.one_of(st.just(""), keys),
)
hook_lists = st.lists(hooks, max_size=3)
devices = st.builds(
    MDevice,
    ifnames,
    keys,
    st.one_of(st.just(""), keys),
    st.integers(0, 65535),
    st.one_of(st.just(0), st.integers(1, 2**32 - 1)),
    st.lists(cidrs, max_size=4),
    st.lists(st.one_of(v4.map(str), v6.map(str), hostnames), max_size=3),
    st.one_of(st.just(0), st.integers(1, 65535)),
    tables,
    hook_lists,
    hook_lists,
    hook_lists,
    hook_lists,
)
versions = st.sampled_from(["v1", "v2"])


def fake_peer(p: MPeer) -> FakePeer:
    when, nanos = (None, 0) if p.hs is None else (datetime.fromtimestamp(p.hs[0], UTC), p.hs[1])
    return FakePeer(
        public_key=p.public,
        preshared_key=p.psk,
        allowed_ips=list(p.allowed),
        endpoint=p.endpoint,
        keepalive=p.keepalive,
        last_handshake=when,
        handshake_nanos=nanos,
        rx=p.rx,
        tx=p.tx,
        private_key=p.private,
    )


def peer_json(p: MPeer, version: str) -> dict[str, Any]:
    """The peer as the test server serializes it (v2 also with the create-time private key)."""
    return ServerBox(version).peer_json(fake_peer(p), with_private=True)


def device_json(d: MDevice, version: str) -> dict[str, Any]:
    fake = FakeDevice(
        name=d.name,
        private_key=d.private,
        public_key=d.public,
        listen_port=d.port,
        firewall_mark=d.fwmark,
        addresses=list(d.addresses),
        dns=list(d.dns),
        mtu=d.mtu,
        table=d.table,
        pre_up=list(d.pre_up),
        post_up=list(d.post_up),
        pre_down=list(d.pre_down),
        post_down=list(d.post_down),
    )
    return ServerBox(version).device_json(fake)


def page(items: list[Any]) -> list[Any]:
    """Items through the page-level decode path (body -> wire/jsonarray.py), as read() gets them.

    Without the per-element size cap: a mutation may grow one element past 1 MiB, which the
    page walk refuses before any parser sees it (tests/unit/test_json_array_walk.py); these
    tests are about the parsers.
    """
    return decode_page(json.dumps(items).encode(), max_element=1 << 40)


def decode_page(body: bytes, max_element: int = jsonarray.MAX_ELEMENT) -> list[Any]:
    """A page body element by element, as WgrestHttp.pages hands it to read(); ValueError if not JSON."""
    try:
        chunks = [body[at : at + 4096] for at in range(0, len(body), 4096)]  # as wgrest_http reads it
        return [value for _text, value in jsonarray.items(chunks, max_element=max_element)]
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def reveal(secret: Any) -> str | None:
    return secret.reveal() if secret is not None else None


def check_peer_equals_model(got: Any, p: MPeer, version: str) -> None:
    assert got.public_key == p.public
    assert reveal(got.preshared_key) == (p.psk or None)
    assert reveal(got.private_key) == ((p.private or None) if version == "v2" else None)
    assert got.allowed_ips == tuple(p.allowed)
    assert got.endpoint == (p.endpoint or None)
    assert got.persistent_keepalive == p.keepalive
    if p.hs is None:
        assert got.latest_handshake is None
    else:
        want = datetime.fromtimestamp(p.hs[0], UTC) + timedelta(microseconds=p.hs[1] // 1000)
        assert got.latest_handshake == want and got.latest_handshake.tzinfo is not None
    assert (got.rx_bytes, got.tx_bytes) == (p.rx, p.tx)


def check_device_equals_model(got: Any, d: MDevice, version: str) -> None:
    assert (got.name, got.public_key, got.listen_port, got.fwmark) == (d.name, d.public, d.port, d.fwmark)
    assert got.addresses == tuple(d.addresses)
    if version == "v1":  # v1 does not send the private key or any wg-quick field
        assert got.private_key is None and got.dns is None and got.mtu is None and got.table is None
        return
    assert reveal(got.private_key) == (d.private or None)
    assert got.dns == tuple(d.dns)
    assert got.mtu == (d.mtu or None) and got.table == (d.table or None)
    hooks_got = (got.pre_up, got.post_up, got.pre_down, got.post_down)
    assert hooks_got == (tuple(d.pre_up), tuple(d.post_up), tuple(d.pre_down), tuple(d.post_down))


@FUZZ
@given(versions, st.lists(peers, max_size=5))
def test_wgrest_peers_read_exactly(version: str, model: list[MPeer]) -> None:
    raws = page([peer_json(p, version) for p in model])
    for i, (raw, p) in enumerate(zip(raws, model, strict=True)):
        got = parse_peer(raw, f"{WHERE} [{i}]")
        check_peer_equals_model(got, p, version)
        validate.peer(got)
    count(f"wgrest {version} peer (model)", "exact")


@FUZZ
@given(versions, devices)
def test_wgrest_device_reads_exactly(version: str, model: MDevice) -> None:
    (raw,) = page([device_json(model, version)])
    got = parse_device(raw, version, WHERE)
    check_device_equals_model(got, model, version)
    validate.interface(got)
    count(f"wgrest {version} device (model)", "exact")


# ---------------------------------------------------------------- mutated

CONTROL = [
    "\r",
    "\n",
    "\r\n",
    "\x00",
    "\x1b",
    "\x7f",
    "\x85",
    "\u2028",
    "\u202e",
    "\ufeff",
    "\ud800",
    "\udfff",
]
# per field, values of the right JSON type that are nearly right: what a lax parser takes or trips on
_TIMES = ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59", "2024-05-01T12:00:03+99:99"]
_TIMES += ["\uff12\uff10\uff12\uff14-05-01T12:00:03Z", "2024-02-30T00:00:00Z", "2024-05-01T24:00:00Z"]
_TIMES += ["2024-05-01T12:00:60Z", " 2024-05-01T12:00:03Z", "2024-05-01T12:00:03.1234567890123Z"]
_DURATIONS = ["\u0662\u0665s", "\uff12\uff15s", " 25s", "25s\n", "1.5s", "-1s", "65536s", "18h12m16s"]
_DURATIONS += ["9" * 400 + "s", ".s", "1..5s", "25S", "25sec", "-0", "+0", "0"]
_CIDRS = ["fe80::1%eth0/64", "10.0.0.1/33", "10.0.0.1/+8", "10.0.0.1/ 8", "10.0.0.1/8,1.2.3.4/32"]
_CIDRS += ["\uff11.2.3.4/32", "1.2.3.4/\u0663\u0662", "::ffff:1.2.3.4/128", "10.0.0.1/255.0.0.0"]
_HOOKS = ["echo \ud800", "echo \u202e", "echo \x00", "echo\r\nrm -rf /", "echo \x1b[2J", "A" * 5000]
NASTY = {
    "last_handshake_time": _TIMES,
    "persistent_keepalive_interval": _DURATIONS,
    "allowed_ips": _CIDRS,
    "networks": _CIDRS,
    "addresses": _CIDRS,
    "endpoint": ["1.2.3.4:99999", "[::1]:", "x:1", "-x:1", "[fe80::1%a,b]:1", "1.2.3.4:\u0665", "h st:1"],
    "dns": ["fe80::1%eth0", "1.1.1.1,8.8.8.8", "-example.com", "exa mple.com", "\uff11.1.1.1"],
    "table": ["4294967296", "off\n", "main table", "\u0661\u0662"],
    "name": ["wg\u00e90", "\uff57\uff47\uff10", "wg0\n", "wg\u202e0", "..", "wg0 ", "wg/0", "x" * 16],
    **{hook: _HOOKS for hook in ("pre_up", "post_up", "pre_down", "post_down")},
}
nasty = st.sampled_from(sorted({v for values in NASTY.values() for v in values}))
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**64, 2**64 - 1, 2**200, -1, 65536, 2**32]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1.5, 1e308, -0.0, 25.0, 51820.0]),
    st.text(max_size=30),
    st.sampled_from(["", "51820", "25", "null", "true", "0s", "1.5s", "-1s", "25 s", "1e3s"]),
    nasty,
    st.lists(st.text(max_size=5), max_size=3),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.just({"nested": {"deeper": [1, {"x": None}]}}),
)


def key_mutants(valid: str) -> st.SearchStrategy[str]:
    """Keys that are almost right: a flipped char, no padding, padding bits set, URL-safe."""
    return st.one_of(
        st.just(valid[:-1]),
        st.just(valid + "A"),
        st.just(valid.replace("=", "A")),
        st.just(valid[:42] + ("B" if valid[42] != "B" else "C") + "="),  # non-zero padding bits
        st.just(valid.replace("+", "-").replace("/", "_")),
        st.just("SECRETSECRETSECRETSECRETSECRETSECRETSECRE!="),
        st.integers(0, 43).flatmap(
            lambda i: st.sampled_from(CONTROL).map(lambda c: valid[:i] + c + valid[i:])
        ),
    )


@st.composite
def mutated(draw: Any, obj: dict[str, Any], known: set[str]) -> tuple[Any, str | None, list[str]]:
    """``obj`` with one mutation, the field it touched (None: the whole object), and the
    key strings it holds (the originals and their near-misses: none may reach an error)."""
    obj = dict(obj)
    secrets = [v for k, v in obj.items() if k in KEY_FIELDS - {"public_key"} and isinstance(v, str) and v]
    kind = draw(
        st.sampled_from(
            ["drop", "extra", "junk", "nasty", "nasty", "nasty", "control", "long", "list", "key", "whole"]
        )
    )
    if kind == "whole":
        return draw(junk), None, secrets
    if kind == "extra":
        name = draw(st.sampled_from(sorted(known)) | st.text(max_size=12))
        obj[name] = draw(junk)
        return obj, name, secrets
    if kind == "nasty" and set(obj) & set(NASTY):
        name = draw(st.sampled_from(sorted(set(obj) & set(NASTY))))
        text = draw(st.sampled_from(NASTY[name]))
        obj[name] = [text] if isinstance(obj[name], list) else text
        return obj, name, secrets
    name = draw(st.sampled_from(sorted(obj)))
    value = obj[name]
    if kind == "drop":
        del obj[name]
    elif kind == "junk":
        obj[name] = draw(junk)
    elif kind == "nasty":  # a field with no nearly-right values of its own
        obj[name] = [draw(nasty)] if isinstance(value, list) else draw(nasty)
    elif kind == "control" and isinstance(value, str):
        i = draw(st.integers(0, len(value)))
        obj[name] = value[:i] + draw(st.sampled_from(CONTROL)) + value[i:]
    elif kind == "control" and isinstance(value, list):
        value = value or ["echo up"]
        i = draw(st.integers(0, len(value) - 1))
        j = draw(st.integers(0, len(value[i]))) if isinstance(value[i], str) else 0
        text = value[i] if isinstance(value[i], str) else ""
        obj[name] = [*value[:i], text[:j] + draw(st.sampled_from(CONTROL)) + text[j:], *value[i + 1 :]]
    elif kind == "long":
        size = draw(st.sampled_from([300, 5000, 100_000]))
        obj[name] = (
            [value[0] if value else "10.0.0.1/32"] * (size // 10) if isinstance(value, list) else "A" * size
        )
    elif kind == "list":
        obj[name] = [*value, draw(junk)] if isinstance(value, list) else [value]
    elif kind == "key" and name in KEY_FIELDS and isinstance(value, str) and value:
        obj[name] = draw(key_mutants(value))
        if name != "public_key":
            secrets.append(obj[name])
    else:
        obj[name] = draw(junk)
    if isinstance(obj.get(name), str) and len(obj[name]) >= 16:
        secrets.append(obj[name])  # not a key, but a value: no error may repeat it either
    return obj, name, secrets


def check_rejection(exc: WgrestProblem, touched: str | None, known: set[str], secrets: list[str]) -> None:
    """The message names the field (the one mutated, when one was) and holds no key."""
    text = str(exc)
    assert text.startswith(WHERE) and len(exc.message) < 200, text
    named = exc.where[len(WHERE) :].strip().split("[")[0]
    if named:
        assert named in known, text
    if touched in known:  # everything else is valid: the touched field is the one to blame
        assert named == touched, (touched, text)
    for secret in secrets:
        assert secret not in text and secret[4:-4] not in text, text


def check_accepted(obj: Any) -> None:
    """Whatever was accepted is a value validate.py takes, with no control character, and
    writable as UTF-8 (what psycopg and a conf file need)."""
    for name in (f.name for f in fields(obj)):
        value = getattr(obj, name)
        for text in value if isinstance(value, tuple) else (value,):
            if isinstance(text, str):
                assert validate.shown(text, None) == text, (name, text)
                text.encode("utf-8")


@FUZZ
@given(versions, peers, st.data())
def test_wgrest_mutated_peer_is_a_parse_or_a_named_error(version: str, p: MPeer, data: st.DataObject) -> None:
    raw, touched, secrets = data.draw(mutated(peer_json(p, version), PEER_FIELDS))
    secrets += [p.psk, p.private] if p.psk and p.private else [s for s in (p.psk, p.private) if s]
    try:
        got = parse_peer(page([raw])[0], WHERE)
    except WgrestProblem as exc:
        check_rejection(exc, touched, PEER_FIELDS, secrets)
        count(f"wgrest {version} peer (mutated)", "rejected")
        return
    validate.peer(got)
    check_accepted(got)
    for name in ("persistent_keepalive_interval", "last_handshake_time"):  # Go prints ASCII, no blanks
        text = raw.get(name) if isinstance(raw, dict) else None
        assert not isinstance(text, str) or (text.isascii() and text == "".join(text.split())), (name, text)
    count(f"wgrest {version} peer (mutated)", "accepted")


@FUZZ
@given(versions, devices, st.data())
def test_wgrest_mutated_device_is_a_parse_or_a_named_error(
    version: str, d: MDevice, data: st.DataObject
) -> None:
    raw, touched, secrets = data.draw(mutated(device_json(d, version), DEVICE_FIELDS))
    secrets += [d.private] if d.private else []
    try:
        got = parse_device(page([raw])[0], version, WHERE)
    except WgrestProblem as exc:
        check_rejection(exc, touched, DEVICE_FIELDS, secrets)
        count(f"wgrest {version} device (mutated)", "rejected")
        return
    validate.interface(got)
    check_accepted(got)
    count(f"wgrest {version} device (mutated)", "accepted")


@FUZZ
@given(versions, devices, st.lists(peers, min_size=1, max_size=3), st.data())
def test_wgrest_mutated_page_text_is_json_or_a_value_error(
    version: str, d: MDevice, ps: list[MPeer], data: st.DataObject
) -> None:
    """The page body itself cut, flipped or nested: the page walk gives JSON or ValueError
    (WgrestHttp.pages turns that into WgrestProblem), and whatever JSON it gives is parsed safely."""
    is_device = data.draw(st.booleans())
    items = [device_json(d, version)] if is_device else [peer_json(p, version) for p in ps]
    hidden = [s for s in (d.private, *(p.psk for p in ps), *(p.private for p in ps)) if s]
    body = json.dumps(items).encode()
    kind = data.draw(st.sampled_from(["flip", "cut", "insert", "nest"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(body) - 1))
        body = body[:i] + bytes([data.draw(st.integers(0, 255))]) + body[i + 1 :]
    elif kind == "cut":
        body = body[: data.draw(st.integers(0, len(body)))]
    elif kind == "insert":
        i = data.draw(st.integers(0, len(body)))
        extra = data.draw(st.binary(max_size=8) | st.sampled_from([b"\\ud800", b"\\u0000", b"NaN", b"1e999"]))
        body = body[:i] + extra + body[i:]
    else:
        depth = data.draw(st.sampled_from([10, 1000, 5000, 100_000]))
        body = b"[" * depth + body + b"]" * depth * data.draw(st.integers(0, 1))
    try:
        decoded = decode_page(body)
    except ValueError:  # UnicodeDecodeError too
        count("wgrest page body (mutated)", "not a JSON array")
        return
    for item in decoded:
        try:
            got = parse_device(item, version, WHERE) if is_device else parse_peer(item, WHERE)
        except WgrestProblem as exc:
            check_rejection(exc, None, DEVICE_FIELDS if is_device else PEER_FIELDS, hidden)
            continue
        check_accepted(got)
    count("wgrest page body (mutated)", "decoded")


# ---------------------------------------------------------------- what the fuzzers found, kept as tests


def good_peer(**over: Any) -> dict[str, Any]:
    raw = peer_json(MPeer(base64.b64encode(bytes(range(32))).decode(), "", [], "", 25, None, 0, 0), "v1")
    return {**raw, **over}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("last_handshake_time", "9999-12-31T23:59:59-23:59"),  # OverflowError, not a WgrestProblem
        ("last_handshake_time", "2024-05-01T12:00:03+99:99"),  # accepted: no such offset
        ("last_handshake_time", "\u0662\u0660\u0662\u0664-05-01T12:00:03Z"),  # accepted: Arabic-Indic digits
        ("last_handshake_time", "2024-05-01T12:00:03Z\n"),  # accepted: Go writes no newline
        ("persistent_keepalive_interval", "\u0662\u0665s"),  # accepted as 25
        ("persistent_keepalive_interval", " 25s\n"),  # accepted as 25
    ],
)
def test_found_peer_values_that_crashed_or_were_taken(field: str, value: str) -> None:
    with pytest.raises(WgrestProblem) as info:
        parse_peer(good_peer(**{field: value}), WHERE)
    assert info.value.where == f"{WHERE} {field}"


def test_found_lone_surrogate_hook_was_taken() -> None:
    """JSON's "\\ud800" became a hook no UTF-8 writer (psycopg, a conf file) can write."""
    raw = json.loads(b'{"name": "wg0", "post_up": ["echo \\ud800"]}')
    with pytest.raises(WgrestProblem) as info:
        parse_device(raw, "v2", WHERE)
    assert info.value.where == f"{WHERE} post_up[0]"


def test_found_deeply_nested_page_raised_recursion_error() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        Answer(200, "OK", WHERE, {}, b"[" * 100_000).json()
