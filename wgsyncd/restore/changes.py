"""What differs between a running interface and the version, like `wg syncconf` computes it.

Shared by every backend that writes a running interface (control socket, ``wg``,
netlink) and by the netlink read-back check. Endpoints are resolved to ``ip:port``
once, before anything is written, so the comparison with the running endpoint is
exact; secrets are compared by fingerprint only.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from dataclasses import dataclass, field

from wgsyncd.restore.errors import RestoreError
from wgsyncd.restore.loading import running_peers
from wgsyncd.state import Interface, Secret, network_set, public_key_from_private


@dataclass
class PeerChange:
    """What one peer needs: add, remove, or update these fields."""

    public_key: str
    action: str  # add | remove | update
    fields: tuple[str, ...] = ()


@dataclass
class InterfaceChanges:
    """The difference between a running interface and the version, like `wg syncconf` computes it."""

    name: str
    backend: str  # uapi | wg | netlink
    device: tuple[str, ...] = ()  # private_key, listen_port, fwmark
    peers: list[PeerChange] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def empty(self) -> bool:
        """Nothing to do: the interface already runs this version."""
        return not self.device and not self.peers

    def summary(self) -> str:
        """One line: counts by action."""
        counts = {a: sum(1 for p in self.peers if p.action == a) for a in ("add", "update", "remove")}
        dev = f"device {','.join(self.device)}; " if self.device else ""
        return (
            f"{self.name} ({self.backend}): {dev}{counts['add']} peers added, {counts['update']} updated, "
            f"{counts['remove']} removed"
        )


_WRITE_ORDER = {"remove": 0, "update": 1, "add": 2}


def write_order(changes: InterfaceChanges) -> list[PeerChange]:
    """The peer changes in the order every backend writes them: removals, updates, additions.

    Removals go first so the allowed IPs they free can move to another peer in the
    same write; within each action the version's order is kept (a stable sort).
    """
    return sorted(changes.peers, key=lambda c: _WRITE_ORDER[c.action])


networks = network_set  # kept under its old name: callers compare allowed IPs with it


def resolve_endpoint(text: str, where: str) -> str:
    """``ip:port`` / ``[v6]:port`` as the control socket and `wg show` want it; DNS names resolved."""
    from wgsyncd.wire.values import format_endpoint

    host, _, port_text = text.rpartition(":")
    host = host.strip("[]")
    try:
        return format_endpoint(str(ipaddress.ip_address(host.split("%")[0])), int(port_text))
    except ValueError:
        pass
    try:
        info = socket.getaddrinfo(host, int(port_text), type=socket.SOCK_DGRAM)
    except (OSError, ValueError):
        raise RestoreError(f"{where}: endpoint host {host!r} does not resolve") from None
    addr = info[0][4][0]
    return format_endpoint(addr, int(port_text))


def with_resolved_endpoints(iface: Interface, where: str) -> Interface:
    """A copy whose running peers' endpoints are ``ip:port`` as the interface shows them.

    DNS names are resolved once, before anything is written (a name that does not
    resolve refuses the restore), so comparing with the running endpoint is exact.
    """
    peers = {
        k: dataclasses.replace(p, endpoint=resolve_endpoint(p.endpoint, f"{where}: peer {k}"))
        if p.endpoint and not p.disabled
        else p
        for k, p in iface.peers.items()
    }
    return dataclasses.replace(iface, peers=peers)


def secret_fp(secret: Secret | None) -> str | None:
    """Compare secrets by fingerprint only."""
    return secret.fingerprint() if secret else None


def diff_interface(current: Interface, desired: Interface, backend: str) -> InterfaceChanges:
    """What must change on ``current`` to run ``desired``; fields the version does not know are left alone."""
    changes = InterfaceChanges(current.name, backend)
    dev = []
    if desired.private_key and current.public_key != public_key_from_private(desired.private_key):
        dev.append("private_key")
    if desired.listen_port is not None and desired.listen_port != (current.listen_port or 0):
        dev.append("listen_port")
    if desired.fwmark is not None and desired.fwmark != (current.fwmark or 0):
        dev.append("fwmark")
    changes.device = tuple(dev)
    want = running_peers(desired)
    for pub in current.peers:
        if pub not in want:
            changes.peers.append(PeerChange(pub, "remove"))
    for pub, peer in want.items():
        have = current.peers.get(pub)
        if have is None:
            changes.peers.append(PeerChange(pub, "add"))
            continue
        diff = []
        if secret_fp(peer.preshared_key) != secret_fp(have.preshared_key):
            diff.append("preshared_key")
        if peer.endpoint and peer.endpoint != have.endpoint:
            diff.append("endpoint")
        if (peer.persistent_keepalive or 0) != (have.persistent_keepalive or 0):
            diff.append("persistent_keepalive")
        if networks(peer.allowed_ips) != networks(have.allowed_ips):
            diff.append("allowed_ips")
        if diff:
            changes.peers.append(PeerChange(pub, "update", tuple(diff)))
    return changes
