"""Issue 16 items 3 and 9: generated conf files, wgsyncd's read against the real tools.

A generator writes realistic and nasty-but-legal wg-quick files (any key case, ASCII
whitespace anywhere wg allows it, CRLF, no final newline, comments everywhere, Latin-1
bytes in comments, ``#!`` disabled blocks with anything in them, repeated public keys,
the interface's own key as a peer, prefixes in several peers, zero and unclamped keys,
ports as numbers/``+n``/service names/over 65535, IPv4 in inet_aton and iproute2
spellings, MTU in hex/octal, bare Table/DNS lines, hooks with ``#`` and commas) and,
at a low rate, a value the tools refuse. Each file is then run through:

1. wg-quick's own parse_options (sourced from /usr/bin/wg-quick, in its C locale),
   which also yields exactly what ``wg-quick strip`` prints;
2. ``wg setconf`` of that on one wireguard-go interface, read back with ``wg show dump``;
3. wg-quick's Address words and MTU given to the real ``ip`` on that interface.

The verdicts must agree (wgsyncd refuses a file exactly when a tool does, naming the
file and line), and for every accepted file every value must equal the tools'. The one
exception is not generated here: a DNS, Table or hook value wgsyncd's restore would refuse
(tests/test_conffiles_edges_oracle.py RESTORE_REFUSES) is refused when read.
Many files go through one interface; ``setconf`` replaces its whole configuration.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.beds import unavailable
from tests.beds import wireguard as wgbed
from tests.beds.wireguard import WgBed, WgBedError, WgIface, missing_reason
from tests.fuzzing import ORACLE, count
from tests.test_conffiles_oracle import WGQUICK_PARSE, _dump_peers, keypair, wg_fields
from wgsyncd.config import ConfConfig
from wgsyncd.sources import conffiles
from wgsyncd.wire import confvalues

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("wg-quick") is None, reason="needs wireguard-tools (wg-quick)"),
]

PRIVS = [keypair(40 + i) for i in range(2)]
PEER_KEYS = [keypair(60 + i)[1] for i in range(4)]
ZERO = base64.b64encode(bytes(32)).decode()
PSKS = [base64.b64encode(bytes([7 + i]) * 32).decode() for i in range(2)] + [ZERO]
SERVICES = [s for s in ("https", "domain", "ntp", "snmp") if confvalues._service_port(s) is not None]
PREFIXES = [
    "10.0.0.1/32",
    "10.0.0.5/24",
    "10.0.0.9/24",
    "192.0.2.0/25",
    "fd00::1/128",
    "fd00::/64",
    "0.0.0.0/0",
]


def unclamp(private: str) -> str:
    """The same X25519 key with the bits clamping clears set: wg shows it clamped."""
    raw = bytearray(base64.b64decode(private))
    raw[0] |= 7
    raw[31] |= 128
    return base64.b64encode(bytes(raw)).decode()


# ---------------------------------------------------------------- the generator

SPACE = st.sampled_from(["", " ", "  ", "\t", " \t", "\v", "\f", "\r"])


@st.composite
def spelled(draw: st.DrawFn, key: str, wg_key: bool = True) -> str:
    """A key in any ASCII case; wg keys may carry whitespace inside (wg drops it)."""
    out = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in key)
    if wg_key and draw(st.integers(0, 9)) == 0:
        i = draw(st.integers(1, len(out) - 1))
        out = out[:i] + draw(st.sampled_from([" ", "\t", "\v"])) + out[i:]
    return out


@st.composite
def kv(draw: st.DrawFn, key: str, value: str, wg_key: bool = True, comment: bool = True) -> bytes:
    """``key = value`` with random whitespace and an optional inline comment."""
    line = f"{draw(SPACE)}{draw(spelled(key, wg_key))}{draw(SPACE)}={draw(SPACE)}{value}{draw(SPACE)}"
    data = line.encode()
    if comment and draw(st.integers(0, 5)) == 0:
        data += draw(st.sampled_from([b" # note", b"# x=y", b" #caf\xe9", b" #"]))
    return data


def number(n: int, base: str) -> str:
    return {"dec": str(n), "zeros": f"00{n}", "plus": f"+{n}", "hex": hex(n), "oct": f"0{n:o}"}[base]


@st.composite
def port(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 5))
    if kind == 0 and SERVICES:
        return draw(st.sampled_from(SERVICES))
    if kind == 1:
        return str(draw(st.integers(65536, 200000)))
    n = draw(st.integers(1, 65535))
    return number(n, draw(st.sampled_from(["dec", "zeros", "plus"])))


@st.composite
def ipv4_host(draw: st.DrawFn) -> str:
    """A numeric IPv4 host as getaddrinfo/inet_aton reads it: dotted, short, octal, hex, decimal."""
    a, b, c, d = 192, 0, 2, draw(st.integers(1, 254))
    return draw(
        st.sampled_from(
            [
                f"{a}.{b}.{c}.{d}",
                f"0x{a:x}.{b}.{c}.{d}",
                f"0{a:o}.{b}.{c}.{d}",
                str(a << 24 | b << 16 | c << 8 | d),
                f"{a}.{b << 16 | c << 8 | d}",
            ]
        )
    )


@st.composite
def endpoint(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return f"{draw(ipv4_host())}:{draw(port())}"
    host = f"fd00::{draw(st.integers(1, 0xFFFF)):x}"
    return f"[{host}]:{draw(port())}" if draw(st.booleans()) else f"{host}:{draw(port())}"


@st.composite
def address_words(draw: st.DrawFn, used: set[int]) -> list[str]:
    """Addresses new to the file (ip refuses a second copy: wg-quick up fails) in ip's spellings."""
    hosts = [
        h for h in draw(st.lists(st.integers(1, 250), min_size=1, max_size=3, unique=True)) if h not in used
    ]
    used.update(hosts)
    out = []
    for h in hosts:
        if draw(st.booleans()):
            prefix = draw(st.sampled_from(["", "/32", "/24", "/024", "/255.255.255.0", "/0x10"]))
            out.append(draw(st.sampled_from([f"10.7.0.{h}", f"10.7.0.0{h:o}", f"012.7.0.{h}"])) + prefix)
        else:
            out.append(f"fd07::{h:x}" + draw(st.sampled_from(["", "/64", "/0100", "/128"])))
    return out


@st.composite
def interface_lines(draw: st.DrawFn, private: str | None) -> list[bytes]:
    lines = []
    used: set[int] = set()
    if private is not None:
        lines.append(draw(kv("PrivateKey", private)))
    choices = draw(
        st.lists(
            st.sampled_from(["port", "fwmark", "addr", "dns", "mtu", "table", "hook", "save", "bare"]),
            max_size=7,
        )
    )
    for c in choices:
        if c == "port":
            lines.append(draw(kv("ListenPort", draw(port()))))
        elif c == "fwmark":
            lines.append(
                draw(kv("FwMark", draw(st.sampled_from(["off", "OFF", "0", "51820", "0x1f", "010"]))))
            )
        elif c == "addr":
            sep = draw(st.sampled_from([", ", ",", " ", "\t"]))
            words = draw(address_words(used))
            if words:
                lines.append(draw(kv("Address", sep.join(words), wg_key=False)))
        elif c == "dns":
            words = draw(
                st.lists(
                    st.sampled_from(["192.0.2.53", "fd00::53", "lan", "example.org", "a.b"]),
                    min_size=1,
                    max_size=3,
                )
            )
            lines.append(draw(kv("DNS", draw(st.sampled_from([", ", ",", " "])).join(words), wg_key=False)))
        elif c == "mtu":
            lines.append(
                draw(
                    kv(
                        "MTU",
                        number(
                            draw(st.integers(1280, 1500)),
                            draw(st.sampled_from(["dec", "zeros", "hex", "plus"])),
                        ),
                        wg_key=False,
                    )
                )
            )
        elif c == "table":
            lines.append(
                draw(
                    kv(
                        "Table",
                        draw(st.sampled_from(["off", "auto", "1234", "main", "Off", ""])),
                        wg_key=False,
                    )
                )
            )
        elif c == "hook":
            hook = draw(st.sampled_from(["PreUp", "PostUp", "PreDown", "PostDown"]))
            cmd = draw(st.text(st.sampled_from("ab %i,'\"=;|$\u00e9\u00a0\u2003#"), max_size=16))
            lines.append(draw(kv(hook, "echo " + cmd, wg_key=False, comment=False)))
        elif c == "save":
            lines.append(
                draw(
                    kv("SaveConfig", draw(st.sampled_from(["true", "false", "True", "FALSE"])), wg_key=False)
                )
            )
        else:
            lines.append(draw(spelled(draw(st.sampled_from(["Table", "DNS"])), wg_key=False)).encode())
    return lines


@st.composite
def peer_lines(draw: st.DrawFn, own: str) -> list[bytes]:
    pub = draw(st.sampled_from([*PEER_KEYS, own]))
    lines = [b"[" + draw(spelled("Peer", wg_key=False)).encode() + b"]", draw(kv("PublicKey", pub))]
    for c in draw(st.lists(st.sampled_from(["psk", "aip", "ep", "ka"]), max_size=5)):
        if c == "psk":
            lines.append(draw(kv("PresharedKey", draw(st.sampled_from(PSKS)))))
        elif c == "aip":
            ips = draw(st.lists(st.sampled_from(PREFIXES), min_size=1, max_size=3))
            lines.append(draw(kv("AllowedIPs", draw(st.sampled_from([", ", ","])).join(ips))))
        elif c == "ep":
            lines.append(draw(kv("Endpoint", draw(endpoint()))))
        else:
            lines.append(
                draw(kv("PersistentKeepalive", draw(st.sampled_from(["off", "0", "25", "025", "65535"]))))
            )
    draw(st.permutations(lines[1:]))
    return lines


@st.composite
def disabled_block(draw: st.DrawFn) -> list[bytes]:
    body = draw(
        st.sampled_from(
            [
                [f"PublicKey = {PEER_KEYS[0]}", "AllowedIPs = 10.9.9.9/32"],
                ["PublicKey = <paste key here>"],
                [f"PublicKey = {PEER_KEYS[1]}", "Endpoint = nowhere", "Bogus = 1"],
                ["# Name = old laptop", f"PublicKey = {PEER_KEYS[3]}", "AllowedIPs = 10.0.0.1/33"],
            ]
        )
    )
    return [b"#! [Peer]", *(b"#! " + line.encode() for line in body)]


BAD_LINES = [
    b"ListenPort = 0x10",
    b"FwMark = 0X1f",
    b"MTU = 08",
    b"Address = 10.0.0.300/24",
    b"SaveConfig = yes",
    b"Bogus = 1",
    "Public\u212aey = x".encode(),
    "ListenPort\u00a0= 5".encode(),
    b"AllowedIPs = 10.0.0.01/32",
]


@st.composite
def conf_files(draw: st.DrawFn) -> bytes:
    private, own = draw(st.sampled_from(PRIVS))
    private = draw(st.sampled_from([private, unclamp(private), ZERO, None]))
    blocks: list[list[bytes]] = [
        [b"[" + draw(spelled("Interface", wg_key=False)).encode() + b"]", *draw(interface_lines(private))]
    ]
    for _ in range(draw(st.integers(0, 4))):
        blocks.append(draw(st.one_of(peer_lines(own), peer_lines(own), disabled_block())))
    if draw(st.integers(0, 19)) == 0:  # a value a tool refuses, somewhere
        block = draw(st.sampled_from(blocks))
        block.insert(draw(st.integers(1, len(block))), draw(st.sampled_from(BAD_LINES)))
    out = []
    for block in blocks:
        if draw(st.booleans()):
            out.append(
                draw(st.sampled_from([b"# a comment", b"### begin peer ###", b"#", b"# caf\xe9", b""]))
            )
        out.extend(block)
        out.append(draw(st.sampled_from([b"", b"#! stray disabled line", b"  "])))
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = eol.join(out)
    return data if draw(st.integers(0, 4)) == 0 else data + eol


# ---------------------------------------------------------------- the tools

TOOL_SCRIPT = (
    WGQUICK_PARSE
    + r"""
printf 'WG_CONFIG\t%s\0' "$WG_CONFIG"
"""
)


def wg_quick(path: Path) -> tuple[int, dict[str, list[str]], bytes]:
    """parse_options exactly as wg-quick runs it: (exit code, its variables, what strip prints)."""
    out = subprocess.run(
        ["bash", "-c", TOOL_SCRIPT, "wgquick-parse", str(path)],
        capture_output=True,
        timeout=20,
        env={**os.environ, "LC_ALL": "C", "WGQUICK": shutil.which("wg-quick") or "wg-quick"},
    )
    values: dict[str, list[str]] = {}
    config = b""
    for record in out.stdout.split(b"\0"):
        var, _, value = record.partition(b"\t")
        if var == b"WG_CONFIG":
            config = value + b"\n"  # cmd_strip: echo "$WG_CONFIG"
        elif var:
            # bytes as wgsyncd decodes a file: UTF-8, a stray byte as its Latin-1 character
            values.setdefault(var.decode(), []).append(value.decode("utf-8", "wgsyncd-latin1"))
    return out.returncode, values, config


def setconf(live: WgIface, config: bytes) -> str | None:
    """``wg setconf`` of the stripped bytes: None when wg accepts, else its error."""
    live.setconf("[Interface]\nListenPort = 0\nFwMark = 0\n")
    path = Path(live.bed.tmpdir) / "fuzz.conf"
    path.write_bytes(config)
    proc = subprocess.run(
        ["wg", "setconf", live.name, str(path)], capture_output=True, text=True, env=wgbed.ENV
    )
    return None if proc.returncode == 0 else proc.stderr.strip()[-200:]


def ip_addresses(live: WgIface, words: list[str]) -> list[str] | None:
    """What ip makes of wg-quick's Address words on the interface (None: ip refuses one)."""
    live.ip("link", "set", "mtu", "1420", "dev", live.name)  # below 1280 the link has no IPv6
    live.ip("address", "flush", "dev", live.name)
    try:
        for w in words:
            live.ip("-6" if ":" in w else "-4", "address", "add", w, "dev", live.name)
        shown = re.findall(r"inet6? (\S+)", live.ip("-o", "address", "show", "dev", live.name))
    except WgBedError:
        return None
    finally:
        live.ip("address", "flush", "dev", live.name)
    return [a for a in shown if not a.startswith("fe80:")]


def ip_mtu(live: WgIface, word: str) -> int | None:
    try:
        live.ip("link", "set", "mtu", word, "dev", live.name)
    except WgBedError:
        return None
    return int(re.search(r" mtu (\d+) ", live.ip("-o", "link", "show", "dev", live.name)).group(1))  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def live() -> Iterator[WgIface]:
    if missing_reason():
        unavailable("wireguard-go", missing_reason() or "")
    bed = WgBed()
    try:
        yield bed.create(conf_text="[Interface]\nListenPort = 0\n")
    finally:
        bed.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conffuzz")


@ORACLE
@given(data=conf_files())
def test_generated_conf_reads_as_the_tools_run_it(data: bytes, live: WgIface, workdir: Path) -> None:
    wgbed.ENV["WG_ENDPOINT_RESOLUTION_RETRIES"] = "0"
    logging.getLogger("wgsyncd.sources.conffiles").setLevel(logging.ERROR)
    path = workdir / "fz0.conf"
    path.write_bytes(data)
    path.chmod(0o600)
    result = conffiles.read(ConfConfig(directory=str(workdir)))
    code, theirs, stripped = wg_quick(path)
    refused = None if code == 0 else "wg-quick"
    if refused is None:
        refused = "wg setconf" if setconf(live, stripped) is not None else None
    addresses = ip_addresses(live, theirs.get("ADDRESSES", [])) if refused is None else None
    if refused is None and addresses is None:
        refused = "ip address"
    mtu = None
    if refused is None and theirs.get("MTU", [""]) != [""]:
        mtu = ip_mtu(live, theirs["MTU"][0])
        refused = "ip link mtu" if mtu is None else None
    if result.errors:
        (err,) = result.errors
        assert err.where.startswith(f"{path}:"), err  # names the file and line
        assert refused is not None, f"wgsyncd refused a file the tools run: {err}\n{data!r}"
        count("conf files vs tools", f"refused by both ({refused})")
        return
    assert refused is None, f"wgsyncd read a file {refused} refuses\n{data!r}"
    ours = result.interfaces["fz0"]
    dump = live.dump()
    priv, pub, _port, fwmark = dump.splitlines()[0].split("\t")
    assert priv == (ours.private_key.reveal() if ours.private_key else "(none)")
    assert pub == (ours.public_key or "(none)")
    if ours.listen_port:
        assert int(_port) == ours.listen_port
    assert fwmark == ("off" if not ours.fwmark else hex(ours.fwmark))
    assert _dump_peers(dump) == wg_fields(ours)["peers"], data
    servers = [d for d in ours.dns or () if re.search(r"(^[0-9.]+$)|(^.*:.*$)", d)]
    assert servers == theirs.get("DNS", []) and [d for d in ours.dns or () if d not in servers] == theirs.get(
        "DNS_SEARCH", []
    )
    assert theirs["TABLE"] == [ours.table or ""]
    for var, mine in (
        ("PRE_UP", ours.pre_up),
        ("POST_UP", ours.post_up),
        ("PRE_DOWN", ours.pre_down),
        ("POST_DOWN", ours.post_down),
    ):
        assert list(mine or ()) == theirs.get(var, []), var
    assert theirs["SAVE_CONFIG"] in ([["true"], ["1"]] if ours.save_config else [["0"], ["false"]])
    assert sorted(addresses or []) == sorted(ours.addresses or ())
    assert mtu == ours.mtu
    count("conf files vs tools", "read exactly")
