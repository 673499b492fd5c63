"""Comparing a netlink read with `wg show dump` and with what setup configured.

Pure functions over wgsyncd's state objects, kept apart from the VM job so the host
can test them too (``tests.kernel_vm.compare``): the kernel tier is only worth
something if a single differing peer, allowed IP or field makes it fail.
Differences name interface, peer public key and field; secrets show as fingerprints.
"""

from __future__ import annotations

import hashlib
from typing import Any


def fingerprint(value: str | None) -> str | None:
    """The same fingerprint as ``state.Secret.fingerprint``: compare keys without showing them."""
    return None if value is None else hashlib.sha256(value.encode()).hexdigest()[:16]


def _value(obj: Any, field: str) -> Any:
    """A comparable, printable value of a field; secrets become fingerprints."""
    value = getattr(obj, field)
    if hasattr(value, "fingerprint"):
        return "sha256:" + value.fingerprint()
    if hasattr(value, "timestamp"):
        return value.timestamp()
    if isinstance(value, tuple):
        return list(value)
    return value


MOVING = ("latest_handshake", "rx_bytes", "tx_bytes")


def _between(read: Any, before: Any, after: Any) -> bool:
    """True when a moving value read between two dumps lies between their values."""
    if read is None or (before is None and after is None):
        return read == before == after
    lo = before if before is not None else float("-inf")
    hi = after if after is not None else float("inf")
    return lo <= read <= hi


def compare_to_dump(got: Any, before: Any, after: Any) -> tuple[list[str], int]:
    """Every difference between the netlink read and the dump; also counts values only bounded.

    The dump is taken before and after the read. A field equal in both dumps must be
    equal in the read; one that moved (counters, handshake of the live pair) must lie
    between the two dumps. Differences name interface, peer key and field, never a secret.
    """
    from wgsyncd.sources.kernel import INTERFACE_FIELDS, PEER_FIELDS

    diffs: list[str] = []
    bounded = 0
    for field in INTERFACE_FIELDS:
        if field == "implementation":  # the dump cannot know; netlink says "kernel"
            continue
        r, b = _value(got, field), _value(before, field)
        if r != b:
            diffs.append(f"{got.name}: {field}: netlink={r!r} dump={b!r}")
    if list(got.peers) != list(before.peers):
        missing = [k for k in before.peers if k not in got.peers]
        extra = [k for k in got.peers if k not in before.peers]
        what = (
            "peer order differs"
            if not missing and not extra
            else f"{len(missing)} missing, {len(extra)} extra"
        )
        diffs.append(
            f"{got.name}: peers: {what} (netlink {len(got.peers)}, dump {len(before.peers)}); "
            f"missing {missing[:3]} extra {extra[:3]}"
        )
    for key, peer in got.peers.items():
        ref_b, ref_a = before.peers.get(key), after.peers.get(key)
        if ref_b is None or ref_a is None:
            continue
        for field in PEER_FIELDS:
            r, b, a = _value(peer, field), _value(ref_b, field), _value(ref_a, field)
            if r == b:
                continue
            if field in MOVING and b != a and _between(r, b, a):
                bounded += 1
                continue
            diffs.append(f"{got.name}: peer {key}: {field}: netlink={_short(r)} dump={_short(b)}")
    return diffs, bounded


def _short(value: Any) -> str:
    """A value for a message, cut so a 1,500-entry list stays readable."""
    text = repr(value)
    return text if len(text) < 300 else text[:300] + f"... ({len(value)} items)"


def compare_to_setup(got: Any, exp: dict) -> list[str]:
    """Differences between the read and what setup configured (independent of `wg show`)."""
    diffs = []
    priv = got.private_key.fingerprint() if got.private_key else None
    if priv != exp["private_fp"]:
        diffs.append(f"{got.name}: private key is not the configured one")
    for field in ("listen_port", "fwmark"):
        if getattr(got, field) != exp[field]:
            diffs.append(f"{got.name}: {field}: read {getattr(got, field)} configured {exp[field]}")
    if set(got.peers) != set(exp["peers"]):
        diffs.append(
            f"{got.name}: {len(got.peers)} peers read, {len(exp['peers'])} configured, "
            f"{len(set(exp['peers']) - set(got.peers))} configured ones missing"
        )
    for key, want in exp["peers"].items():
        peer = got.peers.get(key)
        if peer is None:
            continue
        have = {
            "allowed": sorted(peer.allowed_ips or ()),
            "endpoint": peer.endpoint,
            "keepalive": peer.persistent_keepalive,
            "psk_fp": peer.preshared_key.fingerprint() if peer.preshared_key else None,
        }
        for field, value in have.items():
            if field == "allowed" and value != want[field]:
                missing, extra = sorted(set(want[field]) - set(value)), sorted(set(value) - set(want[field]))
                diffs.append(
                    f"{got.name}: peer {key}: allowed_ips: {len(value)} read, {len(want[field])} configured, "
                    f"missing {_short(missing)}, extra {_short(extra)}"
                )
            elif value != want[field]:
                shown = (
                    "differs"
                    if field == "psk_fp"
                    else f"read {_short(value)} configured {_short(want[field])}"
                )
                diffs.append(f"{got.name}: peer {key}: {field}: {shown}")
        if exp["live"] and not (peer.latest_handshake and peer.rx_bytes and peer.tx_bytes):
            diffs.append(
                f"{got.name}: peer {key}: live pair without handshake/counters "
                f"(hs={peer.latest_handshake}, rx={peer.rx_bytes}, tx={peer.tx_bytes})"
            )
    return diffs
