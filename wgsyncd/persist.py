"""Reboot safety (``[persist] enabled = true``): peers that exist only at run time survive a reboot.

wgrest v1 keeps the peers it adds only in the kernel, and so does ``wg set``: after
a reboot wg-quick brings an interface back from its conf file and those peers are
gone. Each cycle :func:`save` keeps a local snapshot of every running interface's
peers (one JSON file per interface, rewritten atomically and only when it changed);
at boot ``wgsyncd persist-restore`` (wgsyncd-persist.service, after wg-quick and
before wgrest) puts back the peers that are in the snapshot but missing from the
interface. It changes nothing else: no device field, no present peer, no hook run;
an allowed IP that a present peer now holds is left with that peer.

What the snapshot holds: per peer the public key, preshared key, endpoint, allowed
IPs and keepalive, as the kernel has them, and the interface's public key (to
refuse filling a different interface that took the name). Not the interface's
private key: restore never changes the device. The preshared keys are secrets, so
the directory is 0700 and the files 0600, root-owned: the same as what the host
already holds in clear in /etc/wireguard (0700/0600) and wgrest's data dir, and
readable by the same root that can ask the kernel for them (``wg showconf``).

Every value read back is checked before it is sent, with wgsyncd/validate.py's rules
(interface name, keys, CIDRs, endpoint, keepalive, no control characters) plus the
snapshot's own (a prefix length, a literal endpoint address): a damaged or planted
file refuses its interface with one line naming the file. The file is opened without
following a symlink, relative to the already opened directory, and checked on the
open descriptor (a regular file of ours, 0600, in a directory of ours, 0700), so
nothing can be swapped in between the check and the read.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import json
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wgsyncd import validate
from wgsyncd.atomicfile import write_atomic
from wgsyncd.canonical import masked, sorted_text
from wgsyncd.state import HostState, Interface, Peer, Secret, Source

log = logging.getLogger("wgsyncd.persist")

FORMAT = 1
SUFFIX = ".json"
MAX_FILE_BYTES = 64 * 1024 * 1024  # 100,000 peers fit easily; a bigger file is not ours
ProgressFn = Callable[[int, int], None]


class PersistError(Exception):
    """A snapshot file that cannot be used, or an interface that refused the write; names the file."""


# -- the snapshot ----------------------------------------------------------------------


def interface_snapshot(iface: Interface) -> dict[str, Any]:
    """The running part of one interface as the kernel reports it (only peers the kernel has)."""
    peers = []
    # in key order: the kernel's own order varies, and an unchanged snapshot must not be rewritten
    for peer in sorted(iface.peers.values(), key=lambda p: p.public_key):
        if Source.KERNEL not in peer.seen_by:
            continue
        peers.append(
            {
                "public_key": peer.public_key,
                "preshared_key": peer.preshared_key.reveal() if peer.preshared_key else None,
                "endpoint": peer.endpoint,
                "allowed_ips": list(peer.allowed_ips or ()),
                "persistent_keepalive": peer.persistent_keepalive or 0,
            }
        )
    return {"format": FORMAT, "interface": iface.name, "public_key": iface.public_key, "peers": peers}


def _write_if_changed(path: Path, text: str) -> bool:
    """Atomic 0600 write, skipped when the file already holds exactly ``text``. True if written."""
    try:
        if path.read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    write_atomic(path, text, 0o600)
    return True


def save(directory: str, state: HostState) -> list[str]:
    """Snapshot every interface the kernel read fully this cycle; returns the names rewritten.

    An interface a source could not read completely keeps its previous snapshot (a
    failed read must not look like "every peer was removed"); an interface that is
    gone keeps its file too (it may only be down).
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)
    written = []
    for name, iface in state.interfaces.items():
        if Source.KERNEL not in iface.seen_by or state.incomplete(name) or not _is_ifname(name):
            continue
        text = sorted_text(interface_snapshot(iface), indent=1) + "\n"
        if _write_if_changed(root / f"{name}{SUFFIX}", text):
            written.append(name)
    return written


# -- validation of what is read back (validate.py's rules, plus the snapshot's own) -------


def _is_ifname(name: str) -> bool:
    """wg-quick's interface name rule (validate.interface_name), as a yes/no."""
    try:
        validate.interface_name(name)
    except validate.Invalid:
        return False
    return True


def _checked(check: Callable[..., Any], value: Any, where: str, *args: Any) -> Any:
    """``check(value, field, ...)`` with its Invalid turned into a PersistError naming ``where``."""
    try:
        return check(value, "value", *args)
    except validate.Invalid as exc:
        raise PersistError(f"{where}: {exc.message}") from None


def _cidr(value: Any, where: str) -> str:
    """One allowed IP as ``address/prefix``, masked the way the kernel keeps it."""
    text = _checked(validate.cidr, value, where)
    if "/" not in text:
        raise PersistError(f"{where}: allowed IP without a prefix length")
    return masked(text)


def _endpoint(value: Any, where: str) -> str | None:
    """``ip:port`` or ``[v6]:port`` with a literal address (no name to resolve at boot)."""
    if value is None:
        return None
    text = _checked(validate.endpoint, value, where)
    host, _, port = text.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        raise PersistError(f"{where}: endpoint is not ip:port (a literal address)") from None
    if int(port) == 0:
        raise PersistError(f"{where}: endpoint port 0")
    return text


def _key(value: Any, where: str) -> str:
    """A canonical base64 WireGuard key (the value never appears in the message)."""
    return str(_checked(validate.key, value, where))


def _peer(doc: Any, where: str) -> Peer:
    """One snapshot peer, every field checked."""
    if not isinstance(doc, dict):
        raise PersistError(f"{where}: not an object")
    public = _key(doc.get("public_key"), f"{where}: public_key")
    psk = doc.get("preshared_key")
    keepalive = _checked(
        validate.keepalive, doc.get("persistent_keepalive", 0), f"{where}: persistent_keepalive"
    )
    ips = doc.get("allowed_ips", [])
    if not isinstance(ips, list):
        raise PersistError(f"{where}: allowed_ips must be a list")
    return Peer(
        public_key=public,
        preshared_key=Secret(_key(psk, f"{where}: preshared_key")) if psk is not None else None,
        endpoint=_endpoint(doc.get("endpoint"), f"{where}: endpoint"),
        allowed_ips=tuple(_cidr(ip, f"{where}: allowed_ips") for ip in ips),
        persistent_keepalive=keepalive,
    )


@dataclass
class Snapshot:
    """One interface's snapshot, read back and checked."""

    path: Path
    name: str
    public_key: str | None
    peers: dict[str, Peer]


def _read_own_file(path: Path) -> bytes:
    """The bytes of ``path``, read through descriptors checked before the read.

    The directory is opened first and must be ours, mode 0700; the file is opened
    relative to it with O_NOFOLLOW (a symlink planted or swapped in fails) and
    O_NONBLOCK (a FIFO cannot hang the boot), and the open descriptor must be a
    regular file of ours, mode 0600, at most MAX_FILE_BYTES.
    """
    where = str(path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dst = os.fstat(dfd)
        if dst.st_uid != os.geteuid() or stat.S_IMODE(dst.st_mode) != 0o700:
            raise PersistError(f"{path.parent}: snapshot directory must be owned by us with mode 0700")
        try:
            fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise PersistError(f"{where}: not a regular file (a symlink)") from None
            raise
    finally:
        os.close(dfd)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PersistError(f"{where}: not a regular file")
        if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != 0o600:
            raise PersistError(f"{where}: must be owned by us with mode 0600 (not readable by others)")
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise PersistError(f"{where}: larger than {MAX_FILE_BYTES} bytes")
    return data


def load_snapshot(path: Path) -> Snapshot:
    """Read and check one snapshot file; PersistError naming the file for anything wrong."""
    where = str(path)
    try:
        doc = json.loads(_read_own_file(path).decode())
    except (UnicodeDecodeError, ValueError):
        raise PersistError(f"{where}: not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PersistError(f"{where}: not a format {FORMAT} snapshot")
    name = _checked(validate.interface_name, doc.get("interface"), f"{where}: interface name")
    if path.name != f"{name}{SUFFIX}":
        raise PersistError(f"{where}: interface name {name} does not match the file name")
    public = doc.get("public_key")
    public = _key(public, f"{where}: public_key") if public is not None else None
    raw_peers = doc.get("peers")
    if not isinstance(raw_peers, list):
        raise PersistError(f"{where}: peers must be a list")
    peers: dict[str, Peer] = {}
    for index, raw in enumerate(raw_peers):
        peer = _peer(raw, f"{where}: peers[{index}]")
        if peer.public_key in peers:
            raise PersistError(f"{where}: peers[{index}]: public key listed twice")
        peers[peer.public_key] = peer
    return Snapshot(path, name, public, peers)


# -- putting peers back ------------------------------------------------------------------


@dataclass
class Restored:
    """What persist-restore did for one interface."""

    interface: str
    added: list[str] = dataclasses.field(default_factory=list)  # public keys put back
    kept_ips: list[str] = dataclasses.field(default_factory=list)  # allowed IPs left with a present peer
    skipped: str | None = None  # why nothing was done


def missing_peers(snapshot: Snapshot, current: Interface) -> tuple[dict[str, Peer], list[str]]:
    """Snapshot peers the interface lacks, minus allowed IPs a present peer holds now.

    WireGuard moves an allowed IP to the peer that is written last; giving it to a
    restored peer would change a present one, so such an IP stays where it is.
    """
    held = {masked(ip) for p in current.peers.values() for ip in p.allowed_ips or ()}
    out: dict[str, Peer] = {}
    kept: list[str] = []
    for key, peer in snapshot.peers.items():
        if key in current.peers:
            continue
        ips = tuple(ip for ip in peer.allowed_ips or () if ip not in held)
        kept.extend(f"{key} {ip}" for ip in peer.allowed_ips or () if ip in held)
        out[key] = dataclasses.replace(peer, allowed_ips=ips)
    return out, kept


def _apply_adds(target: Any, current: Interface, adds: dict[str, Peer], wg_command: str, where: str) -> None:
    """Add ``adds`` through the restore code's backend for this interface; nothing else is sent."""
    from wgsyncd.restore import running
    from wgsyncd.restore.changes import InterfaceChanges, PeerChange
    from wgsyncd.restore.netlink import netlink_apply
    from wgsyncd.restore.render import render_setconf

    desired = dataclasses.replace(current, private_key=None, peers={**current.peers, **adds})
    changes = InterfaceChanges(current.name, target.backend, (), [PeerChange(k, "add") for k in adds])
    if target.backend == "uapi":
        request = running.uapi_set_request(desired, changes, where)
        running._uapi_exchange(target.socket_path, request, running.UAPI_TIMEOUT, where)
    elif target.backend == "netlink":
        netlink_apply(desired, changes, where)
    else:  # `wg addconf` adds and never removes; only the missing peers are in the file
        only = Interface(current.name, peers=adds)
        running._wg(
            wg_command, "addconf", current.name, "/proc/self/fd/0", stdin=render_setconf(only), where=where
        )


def restore_one(
    snapshot: Snapshot,
    *,
    socket_dir: str,
    wg_command: str,
    dry_run: bool = False,
    batch: int = 1000,
    progress: ProgressFn | None = None,
) -> Restored:
    """Put back one interface's missing peers, ``batch`` peers per write."""
    from wgsyncd.restore import running
    from wgsyncd.restore.errors import RestoreError

    where = f"persist {snapshot.path}"
    done = Restored(snapshot.name)
    try:
        target = running._find_target(snapshot.name, socket_dir, "auto", wg_command, where)
    except RestoreError:
        done.skipped = "the interface does not exist"
        return done
    try:
        current = running._current(target, wg_command, where)
        if snapshot.public_key and current.public_key and current.public_key != snapshot.public_key:
            done.skipped = "the interface runs a different key than the snapshot's"
            return done
        adds, done.kept_ips = missing_peers(snapshot, current)
        keys = list(adds)
        for start in range(0, len(keys), batch):
            chunk = {k: adds[k] for k in keys[start : start + batch]}
            if not dry_run:
                _apply_adds(target, current, chunk, wg_command, where)
                current = dataclasses.replace(current, peers={**current.peers, **chunk})
            done.added.extend(chunk)
            if progress:
                progress(len(done.added), len(keys))
    except RestoreError as exc:
        raise PersistError(str(exc)) from None
    return done


def restore(
    directory: str,
    *,
    socket_dir: str,
    wg_command: str,
    dry_run: bool = False,
    progress: ProgressFn | None = None,
) -> tuple[list[Restored], list[str]]:
    """Every snapshot in ``directory``: (what was done per interface, one error line per refused file).

    A bad file or a failing interface refuses that interface only; the others still
    get their peers back.
    """
    results: list[Restored] = []
    errors: list[str] = []
    root = Path(directory)
    if not root.is_dir():
        return results, [f"{directory}: no snapshot directory (is [persist] enabled and has a cycle run?)"]
    for path in sorted(root.glob(f"*{SUFFIX}")):
        try:
            snap = load_snapshot(path)
            results.append(
                restore_one(
                    snap, socket_dir=socket_dir, wg_command=wg_command, dry_run=dry_run, progress=progress
                )
            )
        except (PersistError, OSError) as exc:
            errors.append(str(exc) if isinstance(exc, PersistError) else f"{path}: {exc.strerror}")
    return results, errors
