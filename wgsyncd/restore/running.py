"""Target: running interfaces (``restore --apply``), without bouncing them.

Like ``wg syncconf``: only peers and device fields that differ are touched, so
unchanged peers keep their sessions. wireguard-go and other userspace
implementations through their control socket (``set=1``); kernel interfaces
through ``wg syncconf`` when the ``wg`` binary exists, else through netlink
(:mod:`wgsyncd.restore.netlink`; ``--apply-via netlink`` forces it). Every
interface is found and read before any is changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from wgsyncd.canonical import ZERO_KEY_HEX
from wgsyncd.restore.changes import InterfaceChanges, diff_interface, with_resolved_endpoints, write_order
from wgsyncd.restore.errors import RestoreError
from wgsyncd.restore.loading import Loaded
from wgsyncd.restore.netlink import netlink_apply, netlink_read
from wgsyncd.restore.render import render_syncconf
from wgsyncd.restore.values import check_interface, check_loaded
from wgsyncd.state import Interface
from wgsyncd.wire import uapi
from wgsyncd.wire.uapi import hex_key
from wgsyncd.wire.values import InterfaceReadError
from wgsyncd.wire.wgdump import DumpParseError, parse_wg_dump

UAPI_TIMEOUT = 30.0
WG_TIMEOUT = 120.0


def uapi_set_request(desired: Interface, changes: InterfaceChanges, where: str) -> bytes:
    """The ``set=1`` request for ``changes``: removals first, so freed allowed IPs can move.

    Every value is checked first: a newline in one would start a new UAPI command.
    """
    check_interface(desired, where)
    out = ["set=1"]
    if "private_key" in changes.device and desired.private_key:
        out.append(f"private_key={hex_key(desired.private_key.reveal())}")
    if "listen_port" in changes.device:
        out.append(f"listen_port={desired.listen_port}")
    if "fwmark" in changes.device:
        out.append(f"fwmark={desired.fwmark}")
    for ch in write_order(changes):
        out.append(f"public_key={hex_key(ch.public_key)}")
        if ch.action == "remove":
            out.append("remove=true")
            continue
        peer = desired.peers[ch.public_key]
        fields = set(ch.fields) if ch.action == "update" else {"all"}
        everything = "all" in fields
        if peer.preshared_key and (everything or "preshared_key" in fields):
            out.append(f"preshared_key={hex_key(peer.preshared_key.reveal())}")
        elif "preshared_key" in fields:
            out.append(f"preshared_key={ZERO_KEY_HEX}")  # the version has none: clear it
        if (everything or "endpoint" in fields) and peer.endpoint:
            out.append(f"endpoint={peer.endpoint}")  # resolved already (with_resolved_endpoints)
        if everything or "persistent_keepalive" in fields:
            out.append(f"persistent_keepalive_interval={peer.persistent_keepalive or 0}")
        if everything or "allowed_ips" in fields:
            out.append("replace_allowed_ips=true")
            out.extend(f"allowed_ip={ip}" for ip in peer.allowed_ips or ())
    return ("\n".join(out) + "\n\n").encode()


def _uapi_exchange(path: str, request: bytes, timeout: float, where: str) -> None:
    """Send one ``set=1`` request and require ``errno=0`` back, within one deadline."""
    try:
        uapi.set_device(path, request, timeout)
    except uapi.SetRefused as exc:
        raise RestoreError(f"{where}: the control socket refused the change: {exc}") from None
    except (InterfaceReadError, uapi.StaleSocket) as exc:
        reason = "Connection refused" if isinstance(exc, uapi.StaleSocket) else str(exc)
        raise RestoreError(f"{where}: {path}: {reason}") from None


@dataclass
class _Target:
    """Where one interface runs and how to reach it."""

    name: str
    backend: str  # uapi | wg | netlink
    socket_path: str | None = None


def is_kernel_link(name: str) -> bool:
    """True when ``name`` is a link of the WireGuard kernel module (uevent says DEVTYPE=wireguard).

    wireguard-go's tun devices also live in /sys/class/net; netlink can only write
    the module's own links, so the netlink backend checks before it reads or writes.
    """
    try:
        uevent = Path(f"/sys/class/net/{name}/uevent").read_text()
    except OSError:
        return False
    return "DEVTYPE=wireguard" in uevent.split()


def _find_target(name: str, socket_dir: str, via: str, wg_command: str, where: str) -> _Target:
    """The running interface ``name`` and the backend that writes it.

    A userspace control socket wins under ``auto``; a kernel link goes through
    ``wg syncconf`` when the ``wg`` binary exists, else through netlink (a host
    without wireguard-tools can still be restored).
    """
    sock = uapi.socket_path(socket_dir, name)
    has_socket = os.path.exists(sock)
    has_link = os.path.exists(f"/sys/class/net/{name}")
    if via in ("auto", "uapi") and has_socket:
        return _Target(name, "uapi", sock)
    if via == "uapi":
        raise RestoreError(f"{where}: no control socket {sock}: is the userspace interface running?")
    if via == "netlink":
        if not is_kernel_link(name):
            what = "is not a kernel WireGuard link" if has_link or has_socket else "does not exist"
            raise RestoreError(
                f"{where}: interface {name} {what}; --apply-via netlink writes only the kernel module's links"
            )
        return _Target(name, "netlink")
    if has_socket or has_link:
        if via == "auto" and not has_socket and shutil.which(wg_command) is None:
            return _Target(name, "netlink")
        return _Target(name, "wg")
    raise RestoreError(
        f"{where}: interface {name} does not exist on this machine; create it first "
        f"(`ip link add {name} type wireguard` or start wireguard-go {name}), then run restore --apply"
    )


def _wg(wg_command: str, *args: str, stdin: str | None = None, where: str) -> str:
    """Run ``wg`` (keys only ever through stdin); a failure names the command, never a value."""
    try:
        proc = subprocess.run(
            [wg_command, *args], input=stdin, capture_output=True, text=True, timeout=WG_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RestoreError(f"{where}: {wg_command} {' '.join(args[:2])}: {exc}") from None
    if proc.returncode != 0:
        raise RestoreError(
            f"{where}: {wg_command} {' '.join(args[:2])} exit {proc.returncode}: {proc.stderr.strip()[:300]}"
        )
    return proc.stdout


def _current(target: _Target, wg_command: str, where: str) -> Interface:
    """What the interface runs now (control socket, netlink dump, or `wg show NAME dump`)."""
    try:
        if target.backend == "uapi":
            assert target.socket_path
            return uapi.parse_reply(target.name, uapi.get(target.socket_path, UAPI_TIMEOUT), {}, {})
        if target.backend == "netlink":
            return netlink_read(target.name, where)
        text = _wg(wg_command, "show", target.name, "dump", where=where)
        return parse_wg_dump(text, target.name)[target.name]
    except (InterfaceReadError, uapi.StaleSocket, DumpParseError) as exc:
        raise RestoreError(f"{where}: cannot read the running interface: {exc}") from None


def apply(
    loaded: Loaded,
    *,
    socket_dir: str = "/run/wireguard",
    wg_command: str = "wg",
    via: str = "auto",
    dry_run: bool = False,
) -> list[InterfaceChanges]:
    """Bring each running interface to the version without bouncing it (see the module doc).

    Every interface is found and read before any is changed, so a missing one
    refuses the whole restore. ``via``: auto | uapi | wg | netlink. ``auto`` takes a
    userspace control socket when there is one, else the kernel link through
    ``wg syncconf`` when ``wg_command`` exists, else through netlink (pyroute2).
    """
    if via not in ("auto", "uapi", "wg", "netlink"):
        raise RestoreError(f"--apply-via {via}: must be auto, uapi, wg or netlink")
    check_loaded(loaded)  # before the name becomes a socket or /sys path
    work = []
    for name, wanted in loaded.interfaces.items():
        where = f"{loaded.label}: interface {name}"
        target = _find_target(name, socket_dir, via, wg_command, where)
        desired = with_resolved_endpoints(wanted, where)
        changes = diff_interface(_current(target, wg_command, where), desired, target.backend)
        work.append((target, desired, changes, where))
    if dry_run:
        return [c for _t, _d, c, _w in work]
    for target, desired, changes, where in work:
        t0 = time.monotonic()
        if changes.empty:
            continue
        if target.backend == "uapi":
            assert target.socket_path
            _uapi_exchange(target.socket_path, uapi_set_request(desired, changes, where), UAPI_TIMEOUT, where)
        elif target.backend == "netlink":
            netlink_apply(desired, changes, where)
        else:
            _wg(
                wg_command,
                "syncconf",
                target.name,
                "/proc/self/fd/0",
                stdin=render_syncconf(desired),
                where=where,
            )
        changes.seconds = time.monotonic() - t0
    return [c for _t, _d, c, _w in work]
