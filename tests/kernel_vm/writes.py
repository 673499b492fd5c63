"""Netlink WRITES through pyroute2's ``WireGuard().set()``, checked with `wg show` (inside the VM).

Why ``restore --apply --apply-via netlink`` (wgsyncd/restore/netlink.py) builds its own messages
with the kernel's flag bits instead of calling ``set()``: what does each pyroute2
version actually tell the kernel? The peer flags differ:

- Debian's 0.7.2 numbers WGPEER_F_* from 0 (REMOVE_ME=0, REPLACE_ALLOWEDIPS=1,
  UPDATE_ONLY=2) and always sends flags=2, which the kernel reads as
  REPLACE_ALLOWEDIPS; ``remove`` sends WGDEVICE_F_REPLACE_PEERS (=1), which the
  kernel reads as REMOVE_ME, so removal works by coincidence;
- PyPI's 0.9.x uses the kernel's bit values and sends 0 unless asked
  (``replace_allowed_ips=True``, ``update_only=True``).

Each check builds its own interface, so a failure in one cannot spoil another.
"""

from __future__ import annotations

from typing import Any

from kernel_vm.compare import compare_to_dump, fingerprint
from kernel_vm.runner import IP, WG, random_key, sh


def _dump(name: str) -> Any:
    """`wg show NAME dump` parsed by wgsyncd's reference parser."""
    from wgsyncd.sources.kernel import parse_wg_dump

    return parse_wg_dump(sh(WG, "show", name, "dump"), name)[name]


def _legacy(version: str) -> bool:
    """True for pyroute2 < 0.8, whose WGPEER_F_* values are off by one bit position."""
    parts = version.split(".")
    return len(parts) >= 2 and parts[0] == "0" and parts[1].isdigit() and int(parts[1]) < 8


class _Iface:
    """A fresh kernel WireGuard link for one write check; deleted on exit."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> _Iface:
        sh(IP, "link", "add", self.name, "type", "wireguard")
        return self

    def __exit__(self, *exc: object) -> None:
        sh(IP, "link", "del", self.name)


def _wg_set(**kwargs: Any) -> None:
    """One ``WireGuard().set()`` call on a fresh socket (as restore would do it)."""
    from pyroute2 import WireGuard

    wg = WireGuard()
    try:
        wg.set(**kwargs)
    finally:
        wg.close()


def add_peer(name: str, version: str) -> tuple[bool, str, dict]:
    """Set the device and add one fully specified peer; `wg show` must show exactly that."""
    private, peer_key, psk = random_key(private=True), random_key(), random_key()
    allowed = ["198.51.100.64/26", "2001:db8:64::/48"]
    with _Iface(name):
        _wg_set(interface=name, private_key=private, listen_port=51999, fwmark=0x42)
        _wg_set(
            interface=name,
            peer={
                "public_key": peer_key,
                "preshared_key": psk,
                "endpoint_addr": "203.0.113.44",
                "endpoint_port": 51820,
                "persistent_keepalive": 21,
                "allowed_ips": allowed,
            },
        )
        got = _dump(name)
        diffs = []
        if (got.private_key.fingerprint() if got.private_key else None) != fingerprint(private):
            diffs.append("private key not as written")
        if (got.listen_port, got.fwmark) != (51999, 0x42):
            diffs.append(f"listen_port/fwmark {got.listen_port}/{got.fwmark:#x}, wrote 51999/0x42")
        peer = got.peers.get(peer_key)
        if peer is None or len(got.peers) != 1:
            diffs.append(f"{len(got.peers)} peers after adding one")
        else:
            if sorted(peer.allowed_ips or ()) != sorted(allowed):
                diffs.append(f"allowed_ips {peer.allowed_ips}, wrote {allowed}")
            if peer.endpoint != "203.0.113.44:51820":
                diffs.append(f"endpoint {peer.endpoint}")
            if peer.persistent_keepalive != 21:
                diffs.append(f"keepalive {peer.persistent_keepalive}")
            if (peer.preshared_key.fingerprint() if peer.preshared_key else None) != fingerprint(psk):
                diffs.append("preshared key not as written")
        diffs += _reader_agrees(name, got)
    return not diffs, "; ".join(diffs) or f"pyroute2 {version}: device + peer written exactly", {}


def _reader_agrees(name: str, dumped: Any) -> list[str]:
    """wgsyncd's netlink read of the written interface must equal the dump too."""

    from wgsyncd.config import KernelConfig
    from wgsyncd.sources.kernel import read

    result = read(KernelConfig(backend="netlink", timeout=600), want=lambda n: n == name)
    if name not in result.interfaces:
        return [f"reader did not see {name}: {[str(e) for e in result.errors]}"]
    return compare_to_dump(result.interfaces[name], dumped, dumped)[0]


def update_allowed_ips(name: str, version: str) -> tuple[bool, str, dict]:
    """Set an existing peer again with one new allowed IP: does the kernel replace or append?

    Expected: 0.7.x replaces (its flags=2 is REPLACE_ALLOWEDIPS to the kernel); 0.8+
    appends unless ``replace_allowed_ips=True``, which must then replace.
    """
    peer_key = random_key()
    first, extra = ["192.0.2.0/28", "192.0.2.16/28"], ["192.0.2.32/28"]
    findings, diffs = [], []
    with _Iface(name):
        _wg_set(interface=name, peer={"public_key": peer_key, "allowed_ips": first})
        _wg_set(interface=name, peer={"public_key": peer_key, "allowed_ips": extra})
        after = sorted(_dump(name).peers[peer_key].allowed_ips or ())
        mode = (
            "replaced"
            if after == extra
            else "appended"
            if after == sorted(first + extra)
            else f"other {after}"
        )
        findings.append(f"re-set without flags: allowed IPs {mode}")
        want = "replaced" if _legacy(version) else "appended"
        if mode != want:
            diffs.append(f"expected {want} for pyroute2 {version}, got {mode}")
        if not _legacy(version):
            _wg_set(
                interface=name,
                peer={"public_key": peer_key, "allowed_ips": first, "replace_allowed_ips": True},
            )
            after2 = sorted(_dump(name).peers[peer_key].allowed_ips or ())
            findings.append(f"replace_allowed_ips=True: {(after2 == sorted(first) and 'replaced') or after2}")
            if after2 != sorted(first):
                diffs.append(f"replace_allowed_ips=True left {after2}")
    detail = f"pyroute2 {version}: " + "; ".join(findings + diffs)
    return not diffs, detail, {"mode": mode}


def remove_peer(name: str, version: str) -> tuple[bool, str, dict]:
    """Remove one of two peers: it must go and the other must stay with its allowed IPs."""
    keep_key, drop_key = random_key(), random_key()
    with _Iface(name):
        _wg_set(interface=name, peer={"public_key": drop_key, "allowed_ips": ["203.0.113.0/28"]})
        _wg_set(interface=name, peer={"public_key": keep_key, "allowed_ips": ["203.0.113.16/28"]})
        _wg_set(interface=name, peer={"public_key": drop_key, "remove": True})
        got = _dump(name)
    diffs = []
    if drop_key in got.peers:
        diffs.append("removed peer still there")
    if keep_key not in got.peers:
        diffs.append("the other peer vanished too (treated as replace-peers?)")
    elif list(got.peers[keep_key].allowed_ips or ()) != ["203.0.113.16/28"]:
        diffs.append(f"the other peer's allowed IPs changed: {got.peers[keep_key].allowed_ips}")
    how = (
        "by coincidence: WGDEVICE_F_REPLACE_PEERS=1 sent as peer flags = REMOVE_ME"
        if _legacy(version)
        else ""
    )
    return not diffs, "; ".join(diffs) or f"pyroute2 {version}: removed, other peer intact {how}".strip(), {}


CHECKS = {
    "write_add_peer": add_peer,
    "write_update_allowed_ips": update_allowed_ips,
    "write_remove_peer": remove_peer,
}


def run(check: str, label: str, version: str) -> tuple[bool, str, dict]:
    """Run one write check on its own interface (``wgw<n>-<label>``)."""
    name = f"wgw{list(CHECKS).index(check)}-{label}"[:15]
    return CHECKS[check](name, version)
