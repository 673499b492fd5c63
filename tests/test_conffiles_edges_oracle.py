"""Issue 16 item 9 against the real tools: every edge file wg-quick runs is read as they run it.

Each file below is one case of the issue. For each: wgsyncd's read() of the file, then
1. ``wg-quick strip`` + ``wg setconf`` on a wireguard-go interface, ``wg show dump``:
   keys, port, fwmark and every live peer equal ours;
2. wg-quick's own parse_options (from /usr/bin/wg-quick) for DNS/Table/hooks, and its
   ADDRESSES and MTU given to the real ``ip`` on that interface, read back: equal ours.
Files the tools refuse (a Kelvin sign in a key, a no-break space) are refused by us too.
Where the issue text and the tools disagree the tools win: a repeated public key takes
the *last* block's endpoint (wg applies blocks in order), not the first's.
"""

from __future__ import annotations

import base64
import logging
import re
import subprocess
from pathlib import Path

import pytest

from tests.beds import wireguard as wgbed
from tests.beds.wireguard import WgBedError, WgIface
from tests.test_conffiles_oracle import (
    _dump_peers,
    keypair,
    live,  # noqa: F401  (fixture)
    wg_fields,
    wg_iface,  # noqa: F401  (fixture)
    wg_quick_parse,
)
from wgsyncd.config import ConfConfig
from wgsyncd.sources.conffiles import ConfParseError, parse_conf, read
from wgsyncd.state import Interface

pytestmark = pytest.mark.skipif(
    subprocess.run(["which", "wg-quick"], capture_output=True).returncode != 0, reason="needs wg-quick"
)

PRIV, OWN = keypair(1)
P = [keypair(20 + i)[1] for i in range(6)]
PSK = base64.b64encode(bytes(range(32))).decode()
ZERO = base64.b64encode(bytes(32)).decode()
UNCLAMPED = base64.b64encode(bytes([255]) * 32).decode()

EDGES: dict[str, bytes] = {
    "disabled": (
        f"[Interface]\nPrivateKey = {PRIV}\n\n#! [Peer]\n#! PublicKey = <paste key here>\n"
        f"#! AllowedIPs = 10.0.0.9/33\n\n[Peer]\nPublicKey = {P[0]}\nAllowedIPs = 10.0.0.1/32\n\n"
        f"#! [Peer]\n#! PublicKey = {P[0]}\n#! AllowedIPs = 10.0.0.2/32\n"
    ).encode(),
    "dupkey": (
        f"[Peer]\nPublicKey = {P[0]}\nPresharedKey = {PSK}\nAllowedIPs = 10.0.0.1/32, 10.0.0.3/32\n"
        f"Endpoint = 192.0.2.1:1\nPersistentKeepalive = 5\n"
        f"[Peer]\nPublicKey = {P[1]}\nAllowedIPs = 10.0.0.1/32\n"
        f"[Peer]\nPublicKey = {P[0]}\nAllowedIPs = 10.0.0.2/32, 10.0.0.1/32\nEndpoint = 192.0.2.2:2\n"
        f"[Peer]\nPublicKey = {P[2]}\nPresharedKey = {PSK}\nAllowedIPs = 10.0.9.0/24\n"
        f"[Peer]\nPublicKey = {P[2]}\nPresharedKey = {ZERO}\n"
    ).encode(),
    "ports": (
        "[Interface]\nListenPort = https\n"
        f"[Peer]\nPublicKey = {P[0]}\nEndpoint = 192.0.2.1:+51820\n"
        f"[Peer]\nPublicKey = {P[1]}\nEndpoint = [fd00::1]:70000\n"
        f"[Peer]\nPublicKey = {P[2]}\nEndpoint = 10.1:domain\n"
        f"[Peer]\nPublicKey = {P[3]}\nEndpoint = 010.0.0.1:010\n"
    ).encode(),
    "bigport": b"[Interface]\nListenPort = 70000\n",
    "iplike": (
        b"[Interface]\nMTU = 0x500\nAddress = 10.0.0.01/32, 010.0.0.2/24\nAddress = 10.3/255.255.0.0\n"
        b"Address = fd00::01/0x40\nTable\nDNS\nDNS = 192.0.2.53, search.example\n"
    ),
    "octalmtu": b"[Interface]\nMTU = 01420\nAddress = 10.0.0.1/024\n",
    "latin1": b"# caf\xe9 au lait\n[Interface]\nListenPort = 5\nPostUp = true # r\xe9seau\n",
    "self": (
        f"[Peer]\nPublicKey = {OWN}\nAllowedIPs = 10.0.0.1/32\n[Interface]\nPrivateKey = {PRIV}\n"
        f"[Peer]\nPublicKey = {P[0]}\nAllowedIPs = 10.0.0.1/32\n"
    ).encode(),
    "prefix": (
        f"[Peer]\nPublicKey = {P[0]}\nAllowedIPs = 10.0.0.5/24, 10.0.1.0/24\n"
        f"[Peer]\nPublicKey = {P[1]}\nAllowedIPs = 10.0.0.9/24\n"
        f"[Peer]\nPublicKey = {P[2]}\nAllowedIPs = 10.0.2.1/32, 10.0.2.2/32, 10.0.2.1/32\n"
        "AllowedIPs = fd00::1/128\n"
    ).encode(),
    "zeros": (
        f"[Interface]\nPrivateKey = {ZERO}\n[Peer]\nPublicKey = {P[0]}\nPresharedKey = {ZERO}\n"
    ).encode(),
    "unclamped": f"[Interface]\nPrivateKey = {UNCLAMPED}\n".encode(),
    "spaces": (
        "[Interface]\nListen\vPort = 7\n\vMTU = 1300\n"
        f"[Peer]\nPublicKey\f= {P[0]}\r\nAllowedIPs = 10.0.0.1/32\v\n"
        "\n[Interface]\nDNS = a.example, c.example\nPostUp = echo x\u00a0\n"
    ).encode(),
}

# files wg-quick runs whose values wgsyncd's restore refuses (validate.py): refused when read,
# naming file, line and field, so the operator learns it at sync time, not at restore time
RESTORE_REFUSES: dict[str, tuple[bytes, str]] = {
    "nbspdns": ("[Interface]\nDNS = a\u00a0b.example, c.example\n".encode(), ":2 DNS"),
    "eschook": (b"[Interface]\nPostUp = echo \x1b[31mred\n", ":2 PostUp"),
    "longhook": (b"[Interface]\nPostUp = echo " + b"y" * 5000 + b"\n", ":2 PostUp"),
    "tableword": (b"[Interface]\nTable = 1;2\n", ":2 Table"),
}

REFUSED: dict[str, bytes] = {
    "kelvin": f"[Peer]\nPublic\u212aey = {P[0]}\n".encode(),
    "nbsp": f"[Peer]\nPublicKey\u00a0= {P[0]}\n".encode(),
    "nbspport": "[Interface]\nListenPort = 5\u00a0\n".encode(),
    "hexport": b"[Interface]\nListenPort = 0x10\n",
    "negport": f"[Peer]\nPublicKey = {P[0]}\nEndpoint = 192.0.2.1:-1\n".encode(),
    "leading0aip": f"[Peer]\nPublicKey = {P[0]}\nAllowedIPs = 10.0.0.01/32\n".encode(),
}

# what each edge file must warn about (file:line Field), so a suspicious file is never silent
WARNS: dict[str, list[str]] = {
    "disabled": [":5 PublicKey: disabled peer not read", ":12 PublicKey: disabled copy of a live peer"],
    "dupkey": [
        ":9 AllowedIPs: prefix also in an earlier peer",
        ":10 PublicKey: same peer as an earlier [Peer]",
        ":12 AllowedIPs: prefix also in an earlier peer",
        ":18 PublicKey: same peer as an earlier [Peer]",
    ],
    "iplike": [":6 Table: line has no '='", ":7 DNS: line has no '='"],
    "latin1": [":1 encoding: not valid UTF-8"],
    "self": [":1 PublicKey: peer has the interface's own public key"],
    "prefix": [":6 AllowedIPs: prefix also in an earlier peer"],
}


def wg_quick_strip(path: Path) -> str:
    """What wg-quick passes to wg; bytes that are not UTF-8 (comments here) kept as Latin-1."""
    out = subprocess.run(["wg-quick", "strip", str(path)], capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return out.stdout.decode("latin-1")


def read_one(tmp_path: Path, name: str, data: bytes) -> tuple[Path, Interface]:
    """Write the file as wg-quick wants it and read it with wgsyncd's real reader."""
    path = tmp_path / f"{name}.conf"
    path.write_bytes(data)
    path.chmod(0o600)
    result = read(ConfConfig(directory=str(tmp_path)), want=lambda n: n == name)
    assert not result.errors, result.errors
    return path, result.interfaces[name]


@pytest.mark.parametrize("name", sorted(EDGES))
def test_edge_file_warnings_name_file_line_field(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wgsyncd.sources.conffiles")
    path, _ = read_one(tmp_path, name, EDGES[name])
    got = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    want = WARNS.get(name, [])
    assert len(got) == len(want), got
    for message, fragment in zip(got, want, strict=True):
        assert message.startswith(f"{path}{fragment}"), (message, fragment)
        assert PSK not in message and PRIV not in message


@pytest.mark.root
@pytest.mark.parametrize("name", sorted(EDGES))
def test_edge_file_equals_wireguard_go(tmp_path: Path, name: str, live: WgIface) -> None:  # noqa: F811
    path, ours = read_one(tmp_path, name, EDGES[name])
    live.setconf("[Interface]\nListenPort = 0\nFwMark = 0\n")
    live.setconf(wg_quick_strip(path))
    dump = live.dump()
    priv, pub, port, fwmark = dump.splitlines()[0].split("\t")
    assert priv == (ours.private_key.reveal() if ours.private_key else "(none)")
    assert pub == (ours.public_key or "(none)")
    if ours.listen_port:
        assert int(port) == ours.listen_port
    assert fwmark == ("off" if not ours.fwmark else hex(ours.fwmark))
    assert _dump_peers(dump) == wg_fields(ours)["peers"]


@pytest.mark.root
@pytest.mark.parametrize("name", sorted(EDGES))
def test_edge_file_wg_quick_options_equal_wg_quick_and_ip(tmp_path: Path, name: str, live: WgIface) -> None:  # noqa: F811
    path, ours = read_one(tmp_path, name, EDGES[name])
    code, theirs = wg_quick_parse(path)
    assert code == 0, theirs
    servers = [d for d in ours.dns or () if re.search(r"(^[0-9.]+$)|(^.*:.*$)", d)]
    assert servers == theirs.get("DNS", [])
    assert [d for d in ours.dns or () if d not in servers] == theirs.get("DNS_SEARCH", [])
    assert theirs["TABLE"] == [ours.table or ""]
    assert list(ours.post_up or ()) == theirs.get("POST_UP", [])
    # Address and MTU mean what `ip` makes of them: give wg-quick's words to the real ip
    live.ip("address", "flush", "dev", live.name)
    for word in theirs.get("ADDRESSES", []):
        live.ip("address", "add", word, "dev", live.name)
    shown = re.findall(r"inet6? (\S+)", live.ip("-o", "address", "show", "dev", live.name))
    shown = [a for a in shown if not a.startswith("fe80:")]
    assert sorted(shown) == sorted(ours.addresses or ())
    live.ip("address", "flush", "dev", live.name)
    if theirs["MTU"] != [""]:
        live.ip("link", "set", "mtu", theirs["MTU"][0], "dev", live.name)
        assert f" mtu {ours.mtu} " in live.ip("-o", "link", "show", "dev", live.name)


@pytest.mark.parametrize("name", sorted(RESTORE_REFUSES))
def test_values_restore_would_refuse_are_refused_when_read(tmp_path: Path, name: str) -> None:
    data, where = RESTORE_REFUSES[name]
    path = tmp_path / f"{name}.conf"
    path.write_bytes(data)
    code, _theirs = wg_quick_parse(path)
    assert code == 0  # wg-quick itself parses the file
    result = read(ConfConfig(directory=str(tmp_path)))
    assert name not in result.interfaces and name in result.unparsed  # backed up as text only
    (err,) = result.errors
    text = f"{err.where}: {err.message}"
    assert f"{path}{where}" in text and "restore refuses" in text, err
    assert "\x1b" not in text and "yyy" not in text


@pytest.mark.root
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_files_the_tools_refuse_are_refused(
    tmp_path: Path,
    name: str,
    live: WgIface,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # wg retries a failed endpoint lookup for ~15 s by default; a refusal is what we want
    monkeypatch.setitem(wgbed.ENV, "WG_ENDPOINT_RESOLUTION_RETRIES", "0")
    path = tmp_path / f"{name}.conf"
    path.write_bytes(REFUSED[name])
    path.chmod(0o600)
    with pytest.raises(ConfParseError) as info:
        parse_conf(REFUSED[name].decode(), str(path))
    assert info.value.where.startswith(f"{path}:")
    with pytest.raises(WgBedError, match="setconf"):
        live.setconf(wg_quick_strip(path))
