"""Oracle tests: our conf parser against the real wg-quick and a real wireguard-go interface.

Three oracles, strongest last:
1. ``wg-quick strip FILE`` prints what wg-quick hands to ``wg``: parsing it must give
   the same wg fields as parsing the whole file.
2. wg-quick's own ``parse_options`` (sourced from /usr/bin/wg-quick, run in bash) gives
   Address/DNS/MTU/Table/hooks/SaveConfig: ours must be equal, in order.
3. ``wg setconf`` of the stripped file on a real wireguard-go interface in a fresh
   network namespace, read back with ``wg show NAME dump``: keys, allowed IPs,
   endpoint, keepalive, listen port and fwmark must equal ours.
Bad files: whatever we reject, wg-quick or ``wg setconf`` rejects too.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.beds import unavailable
from tests.beds.wireguard import (
    WgBed,
    WgBedError,
    WgIface,
    generated_peers,
    genkey,
    make_conf,
    missing_reason,
)
from wgsyncd.config import ConfConfig
from wgsyncd.sources.conffiles import ConfParseError, parse_conf, read
from wgsyncd.state import Interface, Secret, public_key_from_private

TOOLS = ("wg", "wg-quick", "bash")
pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS), reason=f"needs {', '.join(TOOLS)} (wireguard-tools)"
)


def keypair(seed: int) -> tuple[str, str]:
    """A deterministic (private, public) key pair, clamped like `wg genkey` output.

    wg and wireguard-go clamp a private key when it is set, so `wg show` prints the
    clamped form: an unclamped key in a conf file would show up as a difference.
    """
    raw = bytearray([seed]) * 32
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    priv = base64.b64encode(bytes(raw)).decode()
    return priv, public_key_from_private(Secret(priv))


PRIV, _ = keypair(1)
PUB = [keypair(10 + i)[1] for i in range(8)]
PSK = base64.b64encode(bytes(range(32))).decode()

TRICKY: dict[str, str] = {
    "mixed": (
        f"# head comment\n[interface]\nprivatekey = {PRIV}\nLISTENPORT = 051999\nfwmark = 0x1F0\n"
        "address = 10.0.0.1/24, fd00::1/64\nADDRESS = 10.0.1.1\nDns = 192.0.2.53,fd00::53 lan example.org\n"
        "Mtu = 1380\nTABLE = 1234\nPostUp = iptables -A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT\n"
        "postup = echo 'a#b' > /dev/null\nPREDOWN = logger %i down\nPostDown = true, really\n"
        "SaveConfig = FALSE\n\n"
        f"# alice\n[PEER]\nPUBLICKEY = {PUB[0]}\npresharedkey = {PSK}\n"
        "AllowedIPs = 10.0.0.5/24, fd00::2:0:0:1/64 # masked by wg\nallowedips = 10.9.0.7\n"
        "Endpoint = [fd00:0::1]:51820\nPersistentKeepalive = 025\n"
        f"[Peer]\n# Name = bob\nPublicKey={PUB[1]}\nAllowedIPs=::0.1.2.3/128,::ffff:192.0.2.9/128,0.0.0.0/0\n"
        "Endpoint=fd00::9:1234\nPersistentKeepalive=off"  # no trailing newline
    ),
    "disabled": (
        f"[Interface]\nPrivateKey = {PRIV}\nListenPort = 51000\n\n"
        f"### begin carol ###\n[Peer]\nPublicKey = {PUB[2]}\nAllowedIPs = 10.0.0.3/32\n### end carol ###\n\n"
        f"#! # Name = dave\n#! [Peer]\n#! PublicKey = {PUB[3]}\n#! AllowedIPs = 10.0.0.4/32\n\n"
        f"[Peer]\nPublicKey = {PUB[4]}\n\nAllowedIPs = 10.0.0.6/32\n# erin\n[Peer]\nPublicKey = {PUB[5]}\n"
        "AllowedIPs = 10.0.0.7/32\nEndpoint = 192.0.2.7:7\n"
    ),
    "crlf": (
        f"[Interface]\r\nPrivateKey = {PRIV}\r\nFwMark = off\r\nPostUp = echo up\r\n"
        f"[Peer]\r\nPublicKey = {PUB[6]}\r\nAllowedIPs = 10.0.0.8/32\r\n"
    ),
    "spaces": (
        f"  [Interface]  \n\tPrivateKey\t=\t{PRIV}\t\nListen Port = 4242\n"
        f"[ Peer ]\nPublic Key = {PUB[7]}\nAllowed IPs = 10.0.0.9 / 32 , fd00::9/128\n"
        "Endpoint = 192.0.2.9 : 99\nPersistent Keepalive = 15\n"
    ),
    "empty": "",
    "peersonly": f"# no interface section\n[Peer]\nPublicKey = {PUB[0]}\nAllowedIPs = 10.0.0.2/32\n",
}

BAD: dict[str, str] = {
    "badsection": "[Interface]\n[Peers]\n",
    "noequals": "[Interface]\nListenPort\n",
    "badkey": "[Interface]\nPrivateKey = abc=\n",
    "shortkey": f"[Peer]\nPublicKey = {PUB[0][:-4]}AA=\n",
    "emptyval": "[Interface]\nFwMark =\n",
    "trailcomma": f"[Peer]\nPublicKey = {PUB[0]}\nAllowedIPs = 10.0.0.2/32,\n",
    "hexcase": "[Interface]\nFwMark = 0X1f\n",
    "keepalive": f"[Peer]\nPublicKey = {PUB[0]}\nPersistentKeepalive = 65536\n",
    "nopubkey": "[Peer]\nAllowedIPs = 10.0.0.2/32\n",
    "saveconfig": "[Interface]\nSaveConfig = yes\n",
    "beforesect": "ListenPort = 1\n[Interface]\n",
    "unknownkey": "[Interface]\nPost Up = echo\n",
    "spacedif": "[ Interface ]\nAddress = 10.0.0.1/24\n",
    "peeraddr": f"[Peer]\nPublicKey = {PUB[0]}\nAddress = 10.0.0.2/32\n",
    "prefix": f"[Peer]\nPublicKey = {PUB[0]}\nAllowedIPs = 10.0.0.2/33\n",
    "noport": f"[Peer]\nPublicKey = {PUB[0]}\nEndpoint = 192.0.2.1\n",
}

# wg-quick's parse_options and helpers, run by bash on a file; prints NAME\tVALUE\0 records
WGQUICK_PARSE = r"""
set -e
shopt -s extglob
eval "$(sed -n -e '/^die() {/,/^}/p' -e '/^read_bool() {/,/^}/p' -e '/^parse_options() {/,/^}/p' "$WGQUICK")"
ADDRESSES=(); DNS=(); DNS_SEARCH=(); PRE_UP=(); POST_UP=(); PRE_DOWN=(); POST_DOWN=()
MTU=""; TABLE=""; SAVE_CONFIG=0; WG_CONFIG=""; PROGRAM=wg-quick
parse_options "$1"
for v in ADDRESSES DNS DNS_SEARCH PRE_UP POST_UP PRE_DOWN POST_DOWN; do
  declare -n arr=$v
  for x in "${arr[@]}"; do printf '%s\t%s\0' "$v" "$x"; done
  unset -n arr
done
printf 'MTU\t%s\0TABLE\t%s\0SAVE_CONFIG\t%s\0' "$MTU" "$TABLE" "$SAVE_CONFIG"
"""


def write_conf(directory: Path, name: str, text: str) -> Path:
    """A conf file as wg-quick wants it: name.conf, not world-readable."""
    path = directory / f"{name}.conf"
    path.write_bytes(text.encode())
    path.chmod(0o600)
    return path


def wg_quick_strip(path: Path) -> str:
    """What wg-quick passes to wg for this file."""
    out = subprocess.run(["wg-quick", "strip", str(path)], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return out.stdout


def wg_quick_parse(path: Path) -> tuple[int, dict[str, list[str]]]:
    """wg-quick's own parse_options result: (exit code, {VAR: [values]})."""
    out = subprocess.run(
        ["bash", "-c", WGQUICK_PARSE, "wgquick-parse", str(path)],
        capture_output=True,
        timeout=20,
        # wg-quick runs with `export LC_ALL=C` (its line 9): ASCII [[:space:]] and case folding
        env={**os.environ, "LC_ALL": "C", "WGQUICK": shutil.which("wg-quick") or "wg-quick"},
    )
    values: dict[str, list[str]] = {}
    for record in out.stdout.decode().split("\0"):
        if record:
            var, _, value = record.partition("\t")
            values.setdefault(var, []).append(value)
    return out.returncode, values


def wg_fields(iface: Interface) -> dict[str, object]:
    """The part of an Interface that goes to `wg setconf` (disabled peers excluded)."""
    return {
        "private_key": iface.private_key.reveal() if iface.private_key else None,
        "listen_port": iface.listen_port,
        "fwmark": iface.fwmark,
        "peers": {
            pk: (
                p.preshared_key.reveal() if p.preshared_key else None,
                p.allowed_ips,
                p.endpoint,
                p.persistent_keepalive,
            )
            for pk, p in iface.peers.items()
            if not p.disabled
        },
    }


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_wg_fields_equal_the_stripped_file(tmp_path: Path, name: str) -> None:
    path = write_conf(tmp_path, name, TRICKY[name])
    ours = parse_conf(TRICKY[name], str(path))
    stripped = parse_conf(wg_quick_strip(path), str(path))
    assert wg_fields(ours) == wg_fields(stripped)
    assert stripped.addresses == () and stripped.post_up == ()


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_wg_quick_fields_equal_wg_quicks_own_parse(tmp_path: Path, name: str) -> None:
    path = write_conf(tmp_path, name, TRICKY[name])
    ours = parse_conf(TRICKY[name], str(path))
    code, theirs = wg_quick_parse(path)
    assert code == 0, theirs
    dns_servers = [d for d in ours.dns or () if re.search(r"(^[0-9.]+$)|(^.*:.*$)", d)]
    dns_search = [d for d in ours.dns or () if d not in dns_servers]
    assert dns_servers == theirs.get("DNS", []) and dns_search == theirs.get("DNS_SEARCH", [])
    for ours_value, var in (
        (ours.pre_up, "PRE_UP"),
        (ours.post_up, "POST_UP"),
        (ours.pre_down, "PRE_DOWN"),
        (ours.post_down, "POST_DOWN"),
    ):
        assert list(ours_value or ()) == theirs.get(var, []), var
    # wg-quick keeps addresses as written; ours are normalised (prefix made explicit)
    normalised = [str(ipaddress.ip_interface(a)) for a in theirs.get("ADDRESSES", [])]
    assert list(ours.addresses or ()) == normalised
    assert theirs["MTU"] == [str(ours.mtu) if ours.mtu is not None else ""]
    assert theirs["TABLE"] == [ours.table or ""]
    assert theirs["SAVE_CONFIG"] in ([["true"]] if ours.save_config else [["0"], ["false"]])


def test_the_tricky_files_really_exercise_the_rules(tmp_path: Path) -> None:
    """Guard against the oracle passing on a trivial corpus."""
    ours = parse_conf(TRICKY["mixed"], str(tmp_path / "mixed.conf"))
    assert ours.post_up == (
        "iptables -A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT",
        "echo 'a",
    )
    assert ours.peers[PUB[0]].allowed_ips == ("10.0.0.0/24", "fd00::/64", "10.9.0.7/32")
    dis = parse_conf(TRICKY["disabled"], str(tmp_path / "disabled.conf"))
    assert dis.peers[PUB[3]].disabled is True and dis.peers[PUB[3]].name == "dave"
    assert dis.peers[PUB[4]].allowed_ips == ("10.0.0.6/32",)


@pytest.mark.parametrize("name", sorted(BAD))
def test_what_we_reject_the_tools_reject(tmp_path: Path, name: str, wg_iface: WgIface | None) -> None:
    path = write_conf(tmp_path, name, BAD[name])
    with pytest.raises(ConfParseError) as info:
        parse_conf(BAD[name], str(path))
    assert info.value.where.startswith(f"{path}:")
    code, _ = wg_quick_parse(path)
    if code != 0:
        return  # wg-quick itself dies on it
    if wg_iface is None:
        pytest.skip("wg-quick accepts it; checking wg setconf needs root and /dev/net/tun")
    with pytest.raises(WgBedError, match="setconf"):
        wg_iface.setconf(wg_quick_strip(path))


# ---------------------------------------------------------------- the real interface


@pytest.fixture(scope="module")
def wg_iface() -> Iterator[WgIface | None]:
    """One wireguard-go interface (shared bed) for the module, or None when it cannot run here."""
    if missing_reason():
        yield None
        return
    bed = WgBed()
    try:
        yield bed.create(conf_text="[Interface]\nListenPort = 0\n")
    finally:
        bed.close()


@pytest.fixture
def live(wg_iface: WgIface | None) -> WgIface:
    """The interface, or a skip with the reason it cannot exist here."""
    if wg_iface is None:
        unavailable("wireguard-go", missing_reason() or "wireguard-go could not start")
    return wg_iface


@pytest.mark.root
@pytest.mark.parametrize("name", sorted(TRICKY))
def test_wireguard_go_agrees(tmp_path: Path, name: str, live: WgIface) -> None:
    path = write_conf(tmp_path, name, TRICKY[name])
    ours = parse_conf(TRICKY[name], str(path))
    # a fixed start state, so absent ListenPort/FwMark do not inherit the previous file's values
    live.setconf("[Interface]\nListenPort = 0\nFwMark = 0\n")
    live.setconf(wg_quick_strip(path))
    dump = live.dump()
    priv, pub, port, fwmark = dump.splitlines()[0].split("\t")
    assert priv == (ours.private_key.reveal() if ours.private_key else "(none)")
    assert pub == (ours.public_key or "(none)")
    if ours.listen_port:
        assert int(port) == ours.listen_port
    assert fwmark == ("off" if not ours.fwmark else hex(ours.fwmark))
    # wireguard-go lists peers in Go map order: compare as a mapping
    assert _dump_peers(dump) == wg_fields(ours)["peers"]


def _dump_peers(dump: str) -> dict[str, tuple[object, ...]]:
    """`wg show NAME dump` peer lines as {public key: (psk, allowed_ips, endpoint, keepalive)}."""
    out: dict[str, tuple[object, ...]] = {}
    for line in dump.splitlines()[1:]:
        p = line.split("\t")
        out[p[0]] = (
            None if p[1] == "(none)" else p[1],
            () if p[3] == "(none)" else tuple(p[3].split(",")),
            None if p[2] == "(none)" else p[2],
            0 if p[7] == "off" else int(p[7]),
        )
    return out


@pytest.mark.root
def test_10000_peers_read_equals_wireguard_go(tmp_path: Path, live: WgIface) -> None:
    """A big generated conf: read() (file I/O + wgconfig + ours) against the running interface."""
    text = make_conf(genkey(), 0, 0x2A, generated_peers(10000))
    (tmp_path / "big.conf").write_text(text)
    start = time.perf_counter()
    result = read(ConfConfig(directory=str(tmp_path)))
    elapsed = time.perf_counter() - start
    iface = result.interfaces["big"]
    live.setconf(text)
    start = time.perf_counter()
    dump = live.dump()
    dump_s = time.perf_counter() - start
    print(f"\nread(): 10,000 peers, {len(text)} bytes in {elapsed:.3f} s; `wg show dump` {dump_s:.3f} s")
    assert len(iface.peers) == 10000
    assert _dump_peers(dump) == wg_fields(iface)["peers"]
