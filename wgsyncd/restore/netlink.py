"""Kernel apply through netlink: WG_CMD_SET_DEVICE messages, then a read-back.

Restore decides what goes into the messages and in which order (removals first, then
updates, then additions, in the version's order); the encoding (the kernel's flag
bits, whatever pyroute2 is installed; allowed IPs continued over messages) is
:mod:`wgsyncd.wire.netlink_set`'s, the socket exchange :mod:`wgsyncd.wire.netlink`'s,
and the read-back the same reader the daemon syncs with. pyroute2 is imported only
where messages are sent (a host with ``wg`` does not need it).
"""

from __future__ import annotations

from typing import Any

from wgsyncd.restore.changes import InterfaceChanges, diff_interface, write_order
from wgsyncd.restore.errors import RestoreError
from wgsyncd.restore.values import check_interface
from wgsyncd.state import Interface
from wgsyncd.wire import netlink_dump
from wgsyncd.wire.netlink import (  # noqa: F401  (re-exported: restore's public names)
    WG_CMD_SET_DEVICE,
    WG_GENL_VERSION,
    WGPEER_F_REMOVE_ME,
    WGPEER_F_REPLACE_ALLOWEDIPS,
    WGPEER_F_UPDATE_ONLY,
    FamilyMissing,
    SetRefused,
    describe,
    dump_device,
    send_set,
)
from wgsyncd.wire.netlink_set import NETLINK_MESSAGE_BUDGET, EndpointScopeUnknown, MessageFiller, device_attrs
from wgsyncd.wire.values import InterfaceReadError

NETLINK_TIMEOUT = 120.0


def netlink_messages(
    desired: Interface, changes: InterfaceChanges, where: str, budget: int = NETLINK_MESSAGE_BUDGET
) -> list[list[list[Any]]]:
    """The WG_CMD_SET_DEVICE attribute lists for ``changes``, in sending order.

    Removals first (their allowed IPs are freed before others claim them), then
    updates, then additions, in the version's order. A written peer carries every
    field the version knows and its full allowed-IP list (see MessageFiller.write_peer).
    Returns pyroute2 ``wgmsg`` attribute lists holding key values: send, never log.
    """
    check_interface(desired, where)
    filler = MessageFiller(desired.name, device_attrs(desired, changes.device), budget)
    for ch in write_order(changes):
        if ch.action == "remove":
            filler.remove_peer(ch.public_key)
            continue
        try:
            filler.write_peer(desired.peers[ch.public_key])
        except EndpointScopeUnknown as exc:
            raise RestoreError(
                f"{where}: peer {ch.public_key}: endpoint scope {str(exc)!r} is not an interface here"
            ) from None
    filler.flush()
    return filler.messages


def netlink_read(name: str, where: str) -> Interface:
    """The kernel interface as the netlink reader sees it (the same code the daemon syncs with)."""
    try:
        return netlink_dump.fold_dump(name, dump_device(name, NETLINK_TIMEOUT))
    except FamilyMissing:
        raise RestoreError(f"{where}: the WireGuard kernel module is not loaded (no genl family)") from None


def _netlink_send(name: str, messages: list[list[list[Any]]], where: str) -> None:
    """Send the messages, each acknowledged; the first error stops.

    The kernel applies each message whole, but not the series: an error after the
    first message leaves the interface partly changed, which the message says (a
    second restore --apply finishes the job, it only writes what still differs).
    """
    try:
        send_set(messages, NETLINK_TIMEOUT, f"{name} netlink set")
    except SetRefused as exc:
        done = "nothing was changed" if exc.index == 0 else f"{exc.index} of {exc.total} applied"
        raise RestoreError(
            f"{where}: netlink refused message {exc.index + 1} of {exc.total} ({exc.reason}); "
            f"{done}, run restore --apply again to finish"
        ) from None
    except InterfaceReadError as exc:  # the deadline passed: says which step and how long
        raise RestoreError(f"{where}: {exc}; the interface may be partly changed") from None
    except Exception as exc:  # the socket itself (no module, no permission)
        raise RestoreError(f"{where}: netlink: {describe(exc)}") from None


def netlink_apply(desired: Interface, changes: InterfaceChanges, where: str) -> None:
    """Write ``changes`` through netlink, then read the interface back: it must run the version.

    The read-back catches what a silent kernel or library quirk would hide (a peer
    not removed, allowed IPs appended instead of replaced): such a restore fails
    naming the peers and fields, never a key value.
    """
    _netlink_send(desired.name, netlink_messages(desired, changes, where), where)
    left = diff_interface(netlink_read(desired.name, where), desired, "netlink")
    if not left.empty:
        shown = [f"{p.public_key} {p.action} {','.join(p.fields)}".strip() for p in left.peers[:3]]
        raise RestoreError(
            f"{where}: after the netlink write the interface still differs: {left.summary()} "
            f"(e.g. {'; '.join(shown) or 'device ' + ','.join(left.device)})"
        )
