"""Issue 16 item 3: fuzzed UAPI replies, netlink dump bytes and wgsyncd config files.

Each target gets realistic inputs built from a model (so a wrong row is caught: the
parse must equal the model) and the same inputs mutated (bytes flipped, cut, lines
inserted): then the only allowed outcomes are a parse or the reader's own error with
a message naming the line/field, never another exception. Sizes: tests/fuzzing.py.
"""

from __future__ import annotations

import base64
import ipaddress
import itertools
import socket
import struct
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from tests.fuzzing import FUZZ, count
from wgsyncd import config
from wgsyncd.sources import netlink, uapi
from wgsyncd.sources.kernel import InterfaceReadError
from wgsyncd.state import Interface, StateError
from wgsyncd.wire import uapi as wire_uapi

keys = st.binary(min_size=32, max_size=32)
v4net = st.builds(
    lambda a, n: ipaddress.ip_network((a, n), strict=False), st.integers(0, 2**32 - 1), st.integers(0, 32)
)
v6net = st.builds(
    lambda a, n: ipaddress.ip_network((a, n), strict=False), st.integers(0, 2**128 - 1), st.integers(0, 128)
)
endpoints = st.one_of(
    st.none(),
    st.tuples(st.integers(0, 2**32 - 1).map(lambda a: str(ipaddress.IPv4Address(a))), st.integers(0, 65535)),
    st.tuples(st.integers(0, 2**128 - 1).map(lambda a: str(ipaddress.IPv6Address(a))), st.integers(0, 65535)),
)


@dataclass
class MPeer:
    public: bytes
    psk: bytes
    endpoint: tuple[str, int] | None
    keepalive: int
    hs: int
    rx: int
    tx: int
    allowed: list[Any] = field(default_factory=list)


@dataclass
class MDevice:
    private: bytes | None
    port: int
    fwmark: int
    peers: list[MPeer]


peers = st.builds(
    MPeer,
    keys,
    st.one_of(st.just(bytes(32)), keys),
    endpoints,
    st.integers(0, 65535),
    st.one_of(st.just(0), st.integers(1, 253402300799)),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.lists(st.one_of(v4net, v6net), max_size=5, unique=True),
)
devices = st.builds(
    MDevice,
    st.one_of(st.none(), keys),
    st.integers(0, 65535),
    st.integers(0, 2**32 - 1),
    st.lists(peers, max_size=6, unique_by=lambda p: p.public),
)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def ntop(addr: Any) -> str:
    """An address as glibc's inet_ntop prints it (what wg prints), not Python's spelling."""
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    return socket.inet_ntop(family, addr.packed)


def ep_text(ep: tuple[str, int]) -> str:
    if ":" in ep[0]:
        return f"[{ntop(ipaddress.ip_address(ep[0]))}]:{ep[1]}"
    return f"{ep[0]}:{ep[1]}"


def net_text(n: Any) -> str:
    return f"{ntop(n.network_address)}/{n.prefixlen}"


def check_equals_model(iface: Interface, dev: MDevice) -> None:
    """A wrong row is a failure: every value must be the model's."""
    assert (iface.private_key.reveal() if iface.private_key else None) == (
        b64(dev.private) if dev.private else None
    )
    assert iface.listen_port == dev.port and iface.fwmark == dev.fwmark
    assert list(iface.peers) == [b64(p.public) for p in dev.peers]
    for p in dev.peers:
        got = iface.peers[b64(p.public)]
        assert (got.preshared_key.reveal() if got.preshared_key else None) == (
            None if p.psk == bytes(32) else b64(p.psk)
        )
        assert got.allowed_ips == tuple(net_text(n) for n in p.allowed)
        assert got.endpoint == (ep_text(p.endpoint) if p.endpoint else None)
        assert (got.persistent_keepalive, got.rx_bytes, got.tx_bytes) == (p.keepalive, p.rx, p.tx)
        assert (got.latest_handshake.timestamp() if got.latest_handshake else 0) == p.hs


# ---------------------------------------------------------------- UAPI replies


def uapi_reply(dev: MDevice) -> bytes:
    """A ``get=1`` reply the way wireguard-go writes it."""
    lines = []
    if dev.private:
        lines.append(f"private_key={dev.private.hex()}")
    if dev.port:
        lines.append(f"listen_port={dev.port}")
    if dev.fwmark:
        lines.append(f"fwmark={dev.fwmark}")
    for p in dev.peers:
        lines += [f"public_key={p.public.hex()}", f"preshared_key={p.psk.hex()}", "protocol_version=1"]
        if p.endpoint:
            lines.append(f"endpoint={ep_text(p.endpoint)}")
        lines += [
            f"last_handshake_time_sec={p.hs}",
            "last_handshake_time_nsec=0",
            f"tx_bytes={p.tx}",
            f"rx_bytes={p.rx}",
            f"persistent_keepalive_interval={p.keepalive}",
        ]
        lines += [f"allowed_ip={n}" for n in p.allowed]
    return ("\n".join([*lines, "errno=0"]) + "\n\n").encode()


@FUZZ
@given(devices)
def test_uapi_reply_reads_exactly(dev: MDevice) -> None:
    data = uapi_reply(dev)
    memo: dict = {}
    fresh: dict = {}
    check_equals_model(uapi.parse_reply("wgf", data, memo, fresh), dev)
    check_equals_model(uapi.parse_uapi("wgf", data.decode()), dev)  # the line parser agrees
    again = uapi.parse_reply("wgf", data, fresh, {})  # the memo path gives the same peers
    check_equals_model(again, dev)
    count("uapi reply (model)", "exact")


def mutate(data: bytes, draw: Any) -> bytes:
    """One of: flip bytes, cut, insert a junk line, duplicate a line, swap the errno."""
    kind = draw(st.sampled_from(["flip", "cut", "insert", "dup", "errno", "value"]))
    if kind == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
    if kind == "cut":
        return data[: draw(st.integers(0, len(data)))]
    lines = data.split(b"\n")
    i = draw(st.integers(0, max(0, len(lines) - 3)))
    if kind == "insert":
        junk = draw(st.binary(max_size=40) | st.sampled_from([b"=", b"errno=", b"public_key=zz", b"x=1"]))
        lines.insert(i, junk)
    elif kind == "dup" and lines:
        lines.insert(i, lines[i])
    elif kind == "errno":
        lines = [
            b"errno=" + str(draw(st.integers(-5, 200))).encode() if ln.startswith(b"errno=") else ln
            for ln in lines
        ]
    elif lines and b"=" in lines[i]:
        k = lines[i].split(b"=", 1)[0]
        value = draw(
            st.sampled_from([b"", b"-1", b"+5", b"1_0", b"99999999999999999999999", b"1e3", b"\xff", b"0x10"])
            | st.binary(max_size=70)
        )
        lines[i] = k + b"=" + value
    return b"\n".join(lines)


@FUZZ
@given(devices, st.data())
def test_uapi_mutated_reply_is_a_parse_or_a_named_error(dev: MDevice, data: st.DataObject) -> None:
    raw = mutate(uapi_reply(dev), data.draw)
    try:
        iface = uapi.parse_reply("wgf", raw, {}, {})
    except InterfaceReadError as exc:
        assert str(exc) and len(str(exc)) < 300
        count("uapi reply (mutated)", "rejected")
        return
    for p in iface.peers.values():  # whatever was accepted is a sane row
        assert 0 <= (p.rx_bytes or 0) < 2**64 and 0 <= (p.tx_bytes or 0) < 2**64
        assert 0 <= (p.persistent_keepalive or 0) <= 65535
    assert 0 <= (iface.listen_port or 0) <= 65535 and 0 <= (iface.fwmark or 0) < 2**32
    count("uapi reply (mutated)", "accepted")


def walk_in_pieces(raw: bytes, cuts: list[int], memo: dict, fresh: dict) -> Any:
    """The reply fed to the block walk as a socket might deliver it (cut at ``cuts``); None = gave up."""
    blocks = wire_uapi._Blocks("wgf", memo, fresh)
    edges = [0, *sorted(c % (len(raw) + 1) for c in cuts), len(raw)]
    for a, b in itertools.pairwise(edges):
        if not blocks.feed(raw[a:b]):
            return None
    return blocks.finish() if blocks.ended() else None


@FUZZ
@given(devices, st.data(), st.lists(st.integers(0, 1 << 20), max_size=12), st.booleans())
def test_uapi_reply_walked_as_it_arrives_equals_the_line_parser(
    dev: MDevice, data: st.DataObject, cuts: list[int], mutated: bool
) -> None:
    """However the reply is cut into chunks, the streamed walk gives what the line parser gives,
    or gives up (the caller then asks again and the line parser reads it): never another answer."""
    raw = mutate(uapi_reply(dev), data.draw) if mutated else uapi_reply(dev)
    memo: dict = {}
    walked = walk_in_pieces(raw, cuts, memo, {})
    if not mutated:
        assert walked is not None  # a clean reply takes the fast path, whatever the chunks
        check_equals_model(walked, dev)
    if walked is not None:
        assert walked == uapi.parse_uapi("wgf", raw.decode("ascii"))
        fresh: dict = {}
        once = walk_in_pieces(raw, cuts, {}, fresh)
        again = walk_in_pieces(raw, [c + 7 for c in cuts], fresh, {})  # other cuts, the memo of the last read
        assert again == walked and all(again.peers[k] is p for k, p in once.peers.items())
    count("uapi reply (streamed)", "walked" if walked is not None else "gave up")


# ---------------------------------------------------------------- netlink dump bytes


def nla(typ: int, payload: bytes, nested: bool = False) -> bytes:
    body = struct.pack("=HH", 4 + len(payload), typ | (0x8000 if nested else 0)) + payload
    return body + b"\0" * (-len(body) % 4)


def sockaddr(ep: tuple[str, int]) -> bytes:
    if ":" in ep[0]:
        return (
            struct.pack("=H", socket.AF_INET6)
            + struct.pack(">H", ep[1])
            + bytes(4)
            + socket.inet_pton(socket.AF_INET6, ep[0])
            + bytes(4)
        )
    return (
        struct.pack("=H", socket.AF_INET)
        + struct.pack(">H", ep[1])
        + socket.inet_pton(socket.AF_INET, ep[0])
        + bytes(8)
    )


def netlink_message(dev: MDevice, name: str) -> bytes:
    """One WG_CMD_GET_DEVICE reply message (uapi/linux/wireguard.h), as the kernel encodes it."""
    attrs = nla(2, name.encode() + b"\0")
    if dev.private:
        attrs += nla(3, dev.private) + nla(4, bytes(32))
    attrs += nla(6, struct.pack("=H", dev.port)) + nla(7, struct.pack("=I", dev.fwmark))
    peer_nests = b""
    for i, p in enumerate(dev.peers):
        body = nla(1, p.public) + nla(2, p.psk)
        if p.endpoint:
            body += nla(4, sockaddr(p.endpoint))
        body += nla(5, struct.pack("=H", p.keepalive)) + nla(6, struct.pack("=qq", p.hs, 0))
        body += nla(7, struct.pack("=Q", p.rx)) + nla(8, struct.pack("=Q", p.tx))
        ips = b""
        for j, n in enumerate(p.allowed):
            fam = socket.AF_INET6 if n.version == 6 else socket.AF_INET
            ips += nla(
                j,
                nla(1, struct.pack("=H", fam))
                + nla(2, n.network_address.packed)
                + nla(3, bytes([n.prefixlen])),
                True,
            )
        body += nla(9, ips, True)
        peer_nests += nla(i, body, True)
    attrs += nla(8, peer_nests, True)
    genl = bytes([0, 1, 0, 0])
    return struct.pack("=IHHII", 16 + len(genl) + len(attrs), 0x1F, 2, 1, 0) + genl + attrs


class RawMsg(dict):
    """What coalesce's lean path reads of a pyroute2 message: header, raw bytes, offset."""

    def __init__(self, data: bytes) -> None:
        length = struct.unpack_from("=I", data)[0] if len(data) >= 4 else 0
        super().__init__(header={"length": min(length, len(data)), "type": 0x1F})
        self.data = data
        self.offset = 0


@FUZZ
@given(devices)
def test_netlink_dump_reads_exactly(dev: MDevice) -> None:
    iface = netlink.coalesce("wgf", [RawMsg(netlink_message(dev, "wgf"))])
    # the kernel reports the public key itself; the model's placeholder is all zeros
    dev_view = MDevice(dev.private, dev.port, dev.fwmark, dev.peers)
    check_equals_model(iface, dev_view)
    count("netlink dump (model)", "exact")


@FUZZ
@given(devices, st.data())
def test_netlink_mutated_dump_is_a_parse_or_a_named_error(dev: MDevice, data: st.DataObject) -> None:
    raw = mutate(netlink_message(dev, "wgf"), data.draw)
    try:
        netlink.coalesce("wgf", [RawMsg(raw)])
    except (InterfaceReadError, StateError) as exc:
        assert str(exc) and len(str(exc)) < 300
        count("netlink dump (mutated)", "rejected")
        return
    count("netlink dump (mutated)", "accepted")


# ---------------------------------------------------------------- wgsyncd's own config file

SECTIONS = {
    "kernel": config.KernelConfig,
    "conf": config.ConfConfig,
    "wgrest": config.WgrestConfig,
    "database": config.DatabaseConfig,
    "daemon": config.DaemonConfig,
}
TOP = ["host_id", "hostname", "interfaces", "exclude_interfaces", "log_level", "recovery_public_key"]
values = st.one_of(
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.text(max_size=5), max_size=3),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.sampled_from(["auto", "v1", "uapi", "0", "true", "off", "1e999", "nan", "-0", "http://x", ""]),
)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return {"inf": "inf", "-inf": "-inf"}.get(str(v), "nan" if v != v else repr(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{toml_value(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


names = st.one_of(st.sampled_from(TOP), st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
section_keys = {s: [f.name for f in cls.__dataclass_fields__.values()] for s, cls in SECTIONS.items()}
sections = st.sampled_from(sorted(SECTIONS)).flatmap(
    lambda s: st.tuples(
        st.just(s), st.dictionaries(st.sampled_from(section_keys[s]) | names, values, max_size=4)
    )
)


@FUZZ
@given(
    st.dictionaries(names, values, max_size=3),
    st.lists(sections, max_size=3, unique_by=lambda t: t[0]),
    st.dictionaries(
        st.sampled_from(
            [
                "WGSYNCD_HOST_ID",
                "WGSYNCD_DAEMON_INTERVAL",
                "WGSYNCD_NOPE",
                "WGSYNCD_WGREST_PER_PAGE",
                "WGSYNCD_KERNEL_TIMEOUT",
            ]
        ),
        st.text(max_size=8).filter(lambda s: "\0" not in s),
        max_size=2,
    ),
)
def test_config_file_loads_or_names_the_key(tmp_path_factory: Any, top: dict, secs: list, env: dict) -> None:
    text = "".join(f"{k} = {toml_value(v)}\n" for k, v in top.items())
    for s, kv in secs:
        text += f"[{s}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in kv.items())
    path = Path(tmp_path_factory.mktemp("cfg")) / "wgsyncd.toml"
    path.write_text(text)
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        assume(False)
    try:
        cfg = config.load(str(path), environ={"WGSYNCD_HOST_ID": "h", **env})
    except config.ConfigError as exc:
        named = str(exc).split(":")[0]
        from_env = {
            next((f"{s}.{k[len(s) + 1 :]}" for s in SECTIONS if k.startswith(s + "_")), k)
            for k in (e.removeprefix("WGSYNCD_").lower() for e in env)
        }
        known = set(TOP) | {f"{s}.{k}" for s, kv in secs for k in kv} | set(top) | set(SECTIONS) | set(env)
        known |= from_env
        assert named in known or named == str(path), str(exc)
        count("config file", "rejected")
        return
    assert cfg.daemon.interval > 0 and cfg.wgrest.per_page >= 1
    count("config file", "accepted")


# ---------------------------------------------------------------- what the fuzzers found, kept as tests


def test_found_uapi_values_that_crashed_or_gave_wrong_rows() -> None:
    pub = "01" * 32
    base = f"public_key={pub}\n"
    for bad in (
        "rx_bytes=-1",  # int() took it: a negative counter row
        "tx_bytes=1_000",  # int() took it: an underscore number
        "persistent_keepalive_interval=+5",
        "rx_bytes=18446744073709551616",  # past u64
        "last_handshake_time_sec=99999999999999",  # datetime overflow: a crash, not an error
        "endpoint=1.2.3.x:5",  # inet_pton raises OSError: a crash, not an error
        "allowed_ip=1.2.3.x/32",
        "allowed_ip=1.2.3.4/+3",
    ):
        text = base + bad + "\nerrno=0\n\n"
        try:
            uapi.parse_uapi("wgf", text)
        except InterfaceReadError as exc:
            assert "line 2" in str(exc) or "handshake" in str(exc), (bad, str(exc))
        else:
            raise AssertionError(f"accepted {bad!r}")
        try:
            uapi.parse_reply("wgf", text.encode(), {}, {})
        except InterfaceReadError:
            pass
        else:
            raise AssertionError(f"accepted {bad!r}")
