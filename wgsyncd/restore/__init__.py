"""Restore: one config version from the database -> conf files, running interfaces, or wgrest.

The only room that writes a host. Everything that can refuse is checked before
anything is written: the host and version exist, the recovery key is the one the
secrets were sealed to (compared by public key fingerprint BEFORE any blob is
opened), every blob opens and hashes to what the version recorded, every target
interface or wgrest device exists. Only then do the targets change, and each target
changes in the gentlest way it can:

- ``to_dir``: conf files byte for byte from the sealed raw text (rendered in
  wg-quick format when there is none), each written to a temp file, fsynced and
  renamed over the old one, mode 0600, the old one kept as a backup (hard link);
- ``apply``: like ``wg syncconf``: only peers and device fields that differ are
  touched, so unchanged peers keep their sessions. wireguard-go and other userspace
  implementations through their control socket (``set=1``); kernel interfaces
  through ``wg syncconf`` when the ``wg`` binary exists, else through netlink with
  pyroute2 (``--apply-via netlink`` forces it). The netlink messages are built here
  with the kernel's own flag bits, not with ``WireGuard.set()``, whose peer flags
  differ between pyroute2 versions (Debian 12 ships 0.7.2); the interface is read
  back after the write and must then run the version;
- ``to_wgrest``: POST missing peers, PATCH changed ones, DELETE extra ones.

Secrets stay in :class:`~wgsyncd.state.Secret` until the moment they are written
out; messages name host, version, interface, file or URL, never a key. A dry-run diff
shows keys as fingerprints.
"""

from __future__ import annotations

import base64
import dataclasses
import difflib
import errno
import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin

from wgsyncd.state import Interface, Peer, Secret, StateError, key_fingerprint, public_key_from_private

if TYPE_CHECKING:
    from wgsyncd.store import versions

# The database (psycopg) and sealing (PyNaCl) parts are imported where they are used:
# to_dir/apply/render work from a Loaded alone, e.g. inside the kernel test VM.

ZERO_KEY_HEX = "0" * 64
ZERO_KEY_B64 = base64.b64encode(bytes(32)).decode()  # clears a preshared key (netlink, wg syncconf)
DEFAULT_DIR = "/etc/wireguard"
UAPI_TIMEOUT = 30.0
WG_TIMEOUT = 120.0
HTTP_TIMEOUT = 10.0


class RestoreError(Exception):
    """Restore refused or failed; one line naming host/version/interface/file/URL, never a key."""


# ---------------------------------------------------------------- loading a version


@dataclass
class Loaded:
    """One version, opened: the desired interfaces with their secrets (as Secret)."""

    host_id: str
    version: int
    created_at: datetime
    interfaces: dict[str, Interface]
    without_secrets: list[str] = field(default_factory=list)  # restored with --allow-missing-secrets

    @property
    def label(self) -> str:
        """``host H version N`` for messages."""
        return f"host {self.host_id} version {self.version}"


def parse_time(text: str) -> datetime:
    """An ISO 8601 time for ``--at``; without a zone it is UTC (the database stores UTC)."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise RestoreError(f"--at {text!r}: not an ISO 8601 time (e.g. 2025-11-25T08:00:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _pick_version(conn: Any, host_id: str, version: int | None, at: datetime | None) -> versions.Version:
    """The requested version, or a one-line refusal saying what exists instead."""
    from wgsyncd.store import versions

    if not versions.host_known(conn, host_id):
        raise RestoreError(f"host {host_id}: unknown host (it never synced to this database)")
    found = versions.load_version(conn, host_id, version=version, at=at)
    if found is not None:
        return found
    latest = versions.load_version(conn, host_id)
    if latest is None:
        raise RestoreError(f"host {host_id}: no config versions recorded yet (run `wgsyncd sync` there)")
    if version is not None:
        raise RestoreError(f"host {host_id}: no version {version} (versions 1..{latest.version})")
    first = versions.first_version_time(conn, host_id)
    raise RestoreError(
        f"host {host_id}: no version at or before {at.isoformat() if at else '?'} "
        f"(the first version is from {first.isoformat() if first else '?'})"
    )


def _select(ver: versions.Version, interfaces: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The version's interface documents, limited to ``interfaces`` when given."""
    docs: dict[str, dict[str, Any]] = ver.doc.get("interfaces", {})
    wanted = list(dict.fromkeys(interfaces))
    if not wanted:
        return docs
    unknown = [n for n in wanted if n not in docs]
    if unknown:
        have = ", ".join(sorted(docs)) or "none"
        raise RestoreError(
            f"host {ver.host_id} version {ver.version}: no interface {', '.join(unknown)} (it has: {have})"
        )
    return {n: docs[n] for n in wanted}


def _recovery_key(path: str | None, label: str) -> Secret:
    """The operator's recovery private key from ``path``; a missing option says restore is impossible."""
    from wgsyncd import secrets as sealing

    if not path:
        raise RestoreError(
            f"{label}: secrets are sealed; restoring them is impossible without the recovery private key "
            "(--recovery-key FILE, made by `wgsyncd keys init-recovery`)"
        )
    try:
        return sealing.load_recovery_private(path)
    except (sealing.SealError, StateError) as exc:
        raise RestoreError(f"{label}: {exc}") from None


def _open_secrets(
    conn: Any,
    ver: versions.Version,
    docs: dict[str, dict[str, Any]],
    key_file: str | None,
    allow_missing: bool,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Check the key, then open and verify every selected interface's sealed secrets."""
    from wgsyncd import secrets as sealing
    from wgsyncd.store import versions

    label = f"host {ver.host_id} version {ver.version}"
    unsealed = {n: d["secrets"] for n, d in docs.items() if not (d.get("secrets") or {}).get("sealed_to")}
    missing = sorted(unsealed)
    if missing and not allow_missing:
        raise RestoreError(
            f"{label}: interface {', '.join(missing)}: secrets were not stored (no recovery_public_key was "
            "configured); restoring its keys is impossible. --allow-missing-secrets restores the rest"
        )
    refs = {
        n: (d["secrets"]["sha256"], d["secrets"]["sealed_to"]) for n, d in docs.items() if n not in unsealed
    }
    if not refs:
        return {}, missing
    private = _recovery_key(key_file, label)
    have_fp = key_fingerprint(sealing.recovery_public_of(private))
    for name, (_sha, fp) in sorted(refs.items()):
        if fp != have_fp:
            raise RestoreError(
                f"{label}: interface {name}: {key_file} is not the recovery key its secrets were sealed to "
                f"(key {have_fp[:12]}, sealed to {fp[:12]}); nothing was changed"
            )
    blobs = versions.load_sealed(conn, ver.host_id, refs)
    out: dict[str, dict[str, Any]] = {}
    for name, (sha, _fp) in sorted(refs.items()):
        if name not in blobs:
            raise RestoreError(f"{label}: interface {name}: sealed secrets are missing from config_secrets")
        what = f"{label}: interface {name}"
        try:
            clear = sealing.unseal_json(private, blobs[name], what)
        except sealing.SealError as exc:
            raise RestoreError(str(exc)) from None
        except ValueError:
            raise RestoreError(f"{what}: sealed secrets are not valid JSON: tampered data") from None
        if versions.secrets_sha256(clear) != sha:
            raise RestoreError(f"{what}: sealed secrets do not match the version's hash: tampered data")
        out[name] = clear
    return out, missing


def load(
    conn: Any,
    host_id: str,
    *,
    version: int | None = None,
    at: datetime | None = None,
    interfaces: Iterable[str] = (),
    recovery_key_file: str | None = None,
    allow_missing_secrets: bool = False,
) -> Loaded:
    """Find a version, check the recovery key, open and verify its secrets; change nothing.

    Raises RestoreError (one line) on an unknown host/version/interface, a missing or
    wrong recovery key, a missing or tampered blob, or secrets that were never stored
    (unless ``allow_missing_secrets``: then those interfaces come without keys).
    """
    if version is not None and at is not None:
        raise RestoreError("--version and --at: give one of them")
    ver = _pick_version(conn, host_id, version, at)
    docs = _select(ver, interfaces)
    clear, missing = _open_secrets(conn, ver, docs, recovery_key_file, allow_missing_secrets)
    label = f"host {ver.host_id} version {ver.version}"
    built = {n: desired_interface(d, clear.get(n), f"{label}: interface {n}") for n, d in docs.items()}
    return Loaded(ver.host_id, ver.version, ver.created_at, built, missing)


def _tuple(value: list[str] | None) -> tuple[str, ...] | None:
    """JSON lists back to the model's tuples."""
    return None if value is None else tuple(value)


def _conf_endpoints(text: str, path: str, where: str) -> dict[str, str | None]:
    """Each conf peer's configured Endpoint (None = none), from the raw conf text."""
    from wgsyncd.sources import conffiles

    try:
        parsed = conffiles.parse_conf(text, path)
    except conffiles.ConfParseError as exc:
        raise RestoreError(f"{where}: stored conf text does not parse: {exc.where}: {exc.message}") from None
    return {k: p.endpoint for k, p in parsed.peers.items()}


def desired_interface(doc: dict[str, Any], clear: dict[str, Any] | None, where: str) -> Interface:
    """Rebuild the model from a version's interface document and its opened secrets.

    Endpoint: the conf's Endpoint for peers in the conf (a roamed, kernel-learned
    endpoint is not configuration); otherwise the endpoint recorded in the version.
    """
    clear = clear or {}
    psks: dict[str, str] = clear.get("preshared_keys") or {}
    privs: dict[str, str] = clear.get("peer_private_keys") or {}
    conf_text = clear.get("conf_text")
    name = doc["name"]
    conf_eps = (
        _conf_endpoints(conf_text, doc.get("conf_path") or f"{name}.conf", where)
        if conf_text is not None
        else {}
    )
    iface = Interface(
        name=name,
        private_key=Secret(clear["private_key"]) if clear.get("private_key") else None,
        public_key=doc.get("public_key"),
        listen_port=doc.get("listen_port"),
        fwmark=doc.get("fwmark"),
        addresses=_tuple(doc.get("addresses")),
        dns=_tuple(doc.get("dns")),
        mtu=doc.get("mtu"),
        table=doc.get("table"),
        pre_up=_tuple(doc.get("pre_up")),
        post_up=_tuple(doc.get("post_up")),
        pre_down=_tuple(doc.get("pre_down")),
        post_down=_tuple(doc.get("post_down")),
        save_config=doc.get("save_config"),
        conf_path=doc.get("conf_path"),
        conf_text=Secret(conf_text) if conf_text is not None else None,
        comments=_tuple(doc.get("comments")),
        implementation=doc.get("implementation"),
    )
    for p in doc.get("peers", []):
        pub = p["public_key"]
        iface.peers[pub] = Peer(
            public_key=pub,
            preshared_key=Secret(psks[pub]) if pub in psks else None,
            allowed_ips=_tuple(p.get("allowed_ips")),
            endpoint=conf_eps[pub] if pub in conf_eps else p.get("endpoint"),
            persistent_keepalive=p.get("persistent_keepalive"),
            name=p.get("name"),
            comments=_tuple(p.get("comments")),
            disabled=p.get("disabled"),
            private_key=Secret(privs[pub]) if pub in privs else None,
        )
    return iface


def running_peers(iface: Interface) -> dict[str, Peer]:
    """The peers that should run: every peer except those disabled in the conf (``#!``)."""
    return {k: p for k, p in iface.peers.items() if not p.disabled}


# ---------------------------------------------------------------- rendering


_SECRET_LINE = re.compile(r"(?i)^(\s*(?:#!\s*)?(?:PrivateKey|PresharedKey)\s*=\s*)(\S+)(.*)$")


def redact_conf_line(line: str) -> str:
    """A conf line for display: key values become a short fingerprint (diffs still show changes)."""
    m = _SECRET_LINE.match(line)
    if not m:
        return line
    fp = hashlib.sha256(m.group(2).encode()).hexdigest()[:8]
    return f"{m.group(1)}<secret fp:{fp}>{m.group(3)}"


def _peer_lines(peer: Peer, with_secrets: bool) -> list[str]:
    """The wg keys of one peer (shared by the wg-quick and the wg setconf renderings)."""
    out = [f"PublicKey = {peer.public_key}"]
    if peer.preshared_key and with_secrets:
        out.append(f"PresharedKey = {peer.preshared_key.reveal()}")
    if peer.allowed_ips:
        out.append(f"AllowedIPs = {', '.join(peer.allowed_ips)}")
    if peer.endpoint:
        out.append(f"Endpoint = {peer.endpoint}")
    if peer.persistent_keepalive:
        out.append(f"PersistentKeepalive = {peer.persistent_keepalive}")
    return out


def _interface_wg_lines(iface: Interface) -> list[str]:
    """PrivateKey, ListenPort and FwMark lines, as far as they are known."""
    out = []
    if iface.private_key:
        out.append(f"PrivateKey = {iface.private_key.reveal()}")
    if iface.listen_port:
        out.append(f"ListenPort = {iface.listen_port}")
    if iface.fwmark:
        out.append(f"FwMark = {iface.fwmark:#x}")
    return out


def render_conf(iface: Interface) -> str:
    """A wg-quick conf for an interface that has no stored raw text (e.g. wgrest-only hosts).

    Comments, names and disabled peers are written so the conf source reads the same
    document back: comments directly above their section, ``# Name = x`` when the name
    is not already in a comment, disabled peers as ``#! `` lines (wgconfig's style).
    """
    lines = [f"# {c.lstrip('#').strip()}" if not c.startswith("#") else c for c in iface.comments or ()]
    lines.append("[Interface]")
    if iface.addresses:
        lines.append(f"Address = {', '.join(iface.addresses)}")
    if iface.dns:
        lines.append(f"DNS = {', '.join(iface.dns)}")
    if iface.mtu:
        lines.append(f"MTU = {iface.mtu}")
    if iface.table:
        lines.append(f"Table = {iface.table}")
    for key, hooks in (
        ("PreUp", iface.pre_up),
        ("PostUp", iface.post_up),
        ("PreDown", iface.pre_down),
        ("PostDown", iface.post_down),
    ):
        lines.extend(f"{key} = {h}" for h in hooks or ())
    if iface.save_config:
        lines.append("SaveConfig = true")
    if not iface.private_key:
        lines.append("# PrivateKey was not stored in the database (no recovery key): set it before use")
    lines.extend(_interface_wg_lines(iface))
    for peer in iface.peers.values():
        lines.append("")
        comments = list(peer.comments or ())
        if peer.name and not any(
            re.match(rf"(?i)^#+\s*name\s*[=:]\s*{re.escape(peer.name)}\s*$", c) for c in comments
        ):
            comments.insert(0, f"# Name = {peer.name}")
        lines.extend(c if c.startswith("#") else f"# {c}" for c in comments)
        body = ["[Peer]", *_peer_lines(peer, with_secrets=True)]
        lines.extend(f"#! {b}" for b in body) if peer.disabled else lines.extend(body)
    return "\n".join(lines) + "\n"


def render_setconf(iface: Interface) -> str:
    """The ``wg setconf``/``wg syncconf`` file for the running part: keys, port, fwmark, enabled peers."""
    lines = ["[Interface]", *_interface_wg_lines(iface)]
    for peer in running_peers(iface).values():
        lines += ["", "[Peer]", *_peer_lines(peer, with_secrets=True)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- target: a directory


@dataclass
class FileChange:
    """One conf file restore wrote (or would write)."""

    path: str
    action: str  # created | replaced | unchanged
    backup: str | None = None
    diff: str = ""  # unified diff, key values redacted


def conf_file_text(iface: Interface) -> str:
    """The file content for ``iface``: the stored raw text, byte for byte, else a rendering."""
    return iface.conf_text.reveal() if iface.conf_text is not None else render_conf(iface)


def _file_name(iface: Interface) -> str:
    """``<name>.conf`` (the interface name is the file name, as for wg-quick)."""
    return Path(iface.conf_path).name if iface.conf_path else f"{iface.name}.conf"


def _read_existing(path: Path) -> str | None:
    """The current file's text, None if there is none; unreadable is an error naming the file."""
    try:
        return path.read_bytes().decode("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RestoreError(f"{path}: cannot read: {exc.strerror}") from None


def _diff(old: str | None, new: str, path: str) -> str:
    """A unified diff of two conf texts with key values shown as fingerprints."""
    a = [redact_conf_line(x) for x in (old or "").splitlines(keepends=True)]
    b = [redact_conf_line(x) for x in new.splitlines(keepends=True)]
    label_a = path if old is not None else "/dev/null"
    return "".join(difflib.unified_diff(a, b, label_a, path))


def _write_temp(directory: Path, name: str, text: str) -> str:
    """Write ``text`` to a 0600 temp file next to its target and fsync it; return its path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        os.unlink(tmp)
        raise RestoreError(f"{directory / name}: cannot write: {exc.strerror}") from None
    return tmp


def _backup(target: Path, stamp: str) -> str:
    """Keep the file about to be replaced as ``<file>.wgsyncd-backup-<time>`` (a hard link: atomic)."""
    backup = target.with_name(f"{target.name}.wgsyncd-backup-{stamp}")
    n = 1
    while backup.exists():
        n += 1
        backup = target.with_name(f"{target.name}.wgsyncd-backup-{stamp}-{n}")
    try:
        os.link(target, backup)
    except OSError:  # a filesystem without hard links: a copy is as good a backup
        shutil.copy2(target, backup)
    return str(backup)


def to_dir(loaded: Loaded, directory: str = DEFAULT_DIR, *, dry_run: bool = False) -> list[FileChange]:
    """Write each interface's conf file into ``directory`` atomically (or, dry run, only diff).

    All temp files are written and fsynced first; only then is each renamed into
    place, so a failure while writing leaves every existing file as it was.
    """
    root = Path(directory)
    plan: list[tuple[Path, str, FileChange]] = []
    for iface in loaded.interfaces.values():
        target = root / _file_name(iface)
        new = conf_file_text(iface)
        old = _read_existing(target)
        action = "unchanged" if old == new else ("replaced" if old is not None else "created")
        plan.append((target, new, FileChange(str(target), action, diff=_diff(old, new, str(target)))))
    if dry_run:
        return [c for _t, _n, c in plan]
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise RestoreError(f"{root}: cannot create directory: {exc.strerror}") from None
    temps: list[tuple[Path, str, FileChange]] = []
    try:
        for target, new, change in plan:
            if change.action != "unchanged":
                temps.append((target, _write_temp(root, target.name, new), change))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        for target, tmp, change in temps:
            if change.action == "replaced":
                change.backup = _backup(target, stamp)
            os.replace(tmp, target)
    except OSError as exc:
        raise RestoreError(f"{root}: restore of conf files failed: {exc.strerror}") from None
    finally:
        for _target, tmp, _c in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
    _fsync_dir(root)
    return [c for _t, _n, c in plan]


def _fsync_dir(root: Path) -> None:
    """Make the renames durable (a crash right after restore keeps the new files)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- target: running interfaces


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


def _networks(values: Iterable[str] | None) -> frozenset[str]:
    """Allowed IPs as a set of masked networks (what the kernel keeps)."""
    out = set()
    for v in values or ():
        try:
            out.add(str(ipaddress.ip_network(v, strict=False)))
        except ValueError:
            out.add(v)
    return frozenset(out)


def resolve_endpoint(text: str, where: str) -> str:
    """``ip:port`` / ``[v6]:port`` as the control socket and `wg show` want it; DNS names resolved."""
    from wgsyncd.sources.kernel import format_endpoint

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


def _fp(secret: Secret | None) -> str | None:
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
        if _fp(peer.preshared_key) != _fp(have.preshared_key):
            diff.append("preshared_key")
        if peer.endpoint and peer.endpoint != have.endpoint:
            diff.append("endpoint")
        if (peer.persistent_keepalive or 0) != (have.persistent_keepalive or 0):
            diff.append("persistent_keepalive")
        if _networks(peer.allowed_ips) != _networks(have.allowed_ips):
            diff.append("allowed_ips")
        if diff:
            changes.peers.append(PeerChange(pub, "update", tuple(diff)))
    return changes


def _hex(key_b64: str) -> str:
    """A base64 key as the control socket's hex."""
    return base64.b64decode(key_b64).hex()


def uapi_set_request(desired: Interface, changes: InterfaceChanges, where: str) -> bytes:
    """The ``set=1`` request for ``changes``: removals first, so freed allowed IPs can move."""
    out = ["set=1"]
    if "private_key" in changes.device and desired.private_key:
        out.append(f"private_key={_hex(desired.private_key.reveal())}")
    if "listen_port" in changes.device:
        out.append(f"listen_port={desired.listen_port}")
    if "fwmark" in changes.device:
        out.append(f"fwmark={desired.fwmark}")
    order = {"remove": 0, "update": 1, "add": 2}
    for ch in sorted(changes.peers, key=lambda c: order[c.action]):
        out.append(f"public_key={_hex(ch.public_key)}")
        if ch.action == "remove":
            out.append("remove=true")
            continue
        peer = desired.peers[ch.public_key]
        fields = set(ch.fields) if ch.action == "update" else {"all"}
        everything = "all" in fields
        if peer.preshared_key and (everything or "preshared_key" in fields):
            out.append(f"preshared_key={_hex(peer.preshared_key.reveal())}")
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
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(request)
            buf = bytearray()
            while not buf.endswith(b"\n\n"):
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = sock.recv(4096)
                if not chunk:
                    break
                buf += chunk
    except TimeoutError:
        raise RestoreError(f"{where}: no answer from {path} within {timeout:g} s") from None
    except OSError as exc:
        raise RestoreError(f"{where}: {path}: {exc.strerror or exc}") from None
    reply = buf.decode("ascii", errors="replace").strip()
    if reply != "errno=0":
        code = reply.rpartition("errno=")[2] or "?"
        name = errno.errorcode.get(int(code), "?") if code.isdigit() else "?"
        raise RestoreError(f"{where}: the control socket refused the change: errno={code} ({name})")


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
    from wgsyncd.sources import uapi

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


def render_syncconf(iface: Interface) -> str:
    """The file for ``wg syncconf``: :func:`render_setconf` plus the "off" values, spelled out.

    `wg syncconf` leaves a field of an existing peer alone when the file does not
    name it (measured on the kernel: a version without a preshared key or keepalive
    left the old ones running), so every peer carries ``PresharedKey`` (the all-zero
    key clears it) and ``PersistentKeepalive`` (0 turns it off).
    """
    lines = ["[Interface]", *_interface_wg_lines(iface)]
    for peer in running_peers(iface).values():
        lines += ["", "[Peer]", f"PublicKey = {peer.public_key}"]
        psk = peer.preshared_key.reveal() if peer.preshared_key else ZERO_KEY_B64
        lines.append(f"PresharedKey = {psk}")
        if peer.allowed_ips:
            lines.append(f"AllowedIPs = {', '.join(peer.allowed_ips)}")
        if peer.endpoint:
            lines.append(f"Endpoint = {peer.endpoint}")
        lines.append(f"PersistentKeepalive = {peer.persistent_keepalive or 0}")
    return "\n".join(lines) + "\n"


def _current(target: _Target, wg_command: str, where: str) -> Interface:
    """What the interface runs now (control socket, netlink dump, or `wg show NAME dump`)."""
    from wgsyncd.sources import kernel, uapi

    try:
        if target.backend == "uapi":
            assert target.socket_path
            return uapi.read_interface(target.name, target.socket_path, UAPI_TIMEOUT)
        if target.backend == "netlink":
            return _netlink_read(target.name, where)
        text = _wg(wg_command, "show", target.name, "dump", where=where)
        return kernel.parse_wg_dump(text, target.name)[target.name]
    except (kernel.InterfaceReadError, uapi.StaleSocket, kernel.DumpParseError) as exc:
        raise RestoreError(f"{where}: cannot read the running interface: {exc}") from None


# ---------------------------------------------------------------- kernel apply: netlink
#
# The WireGuard genl messages are built here, attribute by attribute, with pyroute2's
# own ``wgmsg`` classes, and sent on its ``WireGuard`` socket; ``WireGuard.set()`` is
# NOT used. Its peer flags depend on the pyroute2 version: Debian 12's 0.7.2 numbers
# WGPEER_F_* from 0 and always sends 2, which the kernel reads as REPLACE_ALLOWEDIPS
# (and its "remove" sends WGDEVICE_F_REPLACE_PEERS = 1, REMOVE_ME only by
# coincidence); 0.9.x sends the real bits, and 0 (append) unless asked. set() also
# carries one peer per message and cannot continue a peer's allowed IPs over several
# messages. Sending the kernel's bit values ourselves makes both versions (and any in
# between) write the same bytes: every written peer gets its full allowed-IP list
# with REPLACE_ALLOWEDIPS, removals carry REMOVE_ME, and the result is read back.

# uapi/linux/wireguard.h
WG_CMD_SET_DEVICE = 1
WG_GENL_VERSION = 1
WGPEER_F_REMOVE_ME = 1 << 0
WGPEER_F_REPLACE_ALLOWEDIPS = 1 << 1
WGPEER_F_UPDATE_ONLY = 1 << 2
# Bytes of attributes per message: far below the socket's send buffer and the kernel's
# genl limit, big enough that 10,000 small peers take a few hundred round trips.
NETLINK_MESSAGE_BUDGET = 16384
NETLINK_TIMEOUT = 120.0
# Rough encoded sizes (nla header + payload, padded) used to fill messages.
_NLA_PEER_BASE = 4 + 36 + 8  # nest, public key, flags
_NLA_PEER_FIELDS = 36 + 32 + 8  # psk, endpoint (v6), keepalive
_NLA_ALLOWED_V4, _NLA_ALLOWED_V6 = 28, 40
_NLA_DEVICE = 4 + 20 + 36 + 8 + 8 + 4  # header slack, ifname, private key, port, fwmark, peers nest


def _endpoint_value(endpoint: str, where: str) -> dict[str, Any]:
    """``ip:port`` / ``[v6%scope]:port`` as pyroute2's endpoint nla wants it.

    pyroute2 packs sin6_scope_id big-endian (both versions) while the kernel reads
    host order, so the scope's interface index is byte-swapped here to arrive right.
    """
    host, _, port = endpoint.rpartition(":")
    host = host.strip("[]")
    addr, _, scope = host.partition("%")
    value: dict[str, Any] = {"addr": addr, "port": int(port)}
    if ":" in addr:
        index = 0
        if scope:
            try:
                index = int(scope) if scope.isdigit() else socket.if_nametoindex(scope)
            except OSError:
                raise RestoreError(f"{where}: endpoint scope {scope!r} is not an interface here") from None
        value["flowinfo"] = 0
        value["scope_id"] = int.from_bytes(index.to_bytes(4, sys.byteorder), "big")
    return value


def _allowed_ip_nest(cidr: str) -> tuple[dict[str, Any], int]:
    """One WGPEER_A_ALLOWEDIPS entry (family, address, mask) and its encoded size."""
    net = ipaddress.ip_network(cidr, strict=False)
    family = socket.AF_INET6 if net.version == 6 else socket.AF_INET
    nest = {
        "attrs": [
            ["WGALLOWEDIP_A_FAMILY", family],
            ["WGALLOWEDIP_A_IPADDR", net.network_address.packed],
            ["WGALLOWEDIP_A_CIDR_MASK", net.prefixlen],
        ]
    }
    return nest, _NLA_ALLOWED_V6 if net.version == 6 else _NLA_ALLOWED_V4


class _MessageFiller:
    """Packs device attributes and peer nests into messages of at most ``budget`` bytes."""

    def __init__(self, name: str, device_attrs: list[list[Any]], budget: int) -> None:
        self.name = name
        self.budget = budget
        self.messages: list[list[list[Any]]] = []
        self._peers: list[dict[str, Any]] = []
        self._device = device_attrs
        self._size = _NLA_DEVICE

    def room(self) -> int:
        """Bytes still free in the message being filled."""
        return self.budget - self._size

    def add(self, peer_attrs: list[list[Any]], size: int) -> None:
        """Add one peer nest; starts a new message first when it would not fit."""
        if size > self.room() and self._peers:
            self.flush()
        self._peers.append({"attrs": peer_attrs})
        self._size += size

    def flush(self) -> None:
        """Close the message being filled (the first one carries the device attributes)."""
        if not self._peers and not self._device:
            return
        attrs: list[list[Any]] = [["WGDEVICE_A_IFNAME", self.name], *self._device]
        if self._peers:
            attrs.append(["WGDEVICE_A_PEERS", self._peers])
        self.messages.append(attrs)
        self._peers, self._device, self._size = [], [], _NLA_DEVICE


def netlink_messages(
    desired: Interface, changes: InterfaceChanges, where: str, budget: int = NETLINK_MESSAGE_BUDGET
) -> list[list[list[Any]]]:
    """The WG_CMD_SET_DEVICE attribute lists for ``changes``, in sending order.

    Removals first (their allowed IPs are freed before others claim them), then
    updates, then additions, in the version's order. A written peer carries every
    field the version knows (a missing preshared key as the all-zero key, which
    clears it) and its full allowed-IP list with REPLACE_ALLOWEDIPS; a list too long
    for one message continues in the next with UPDATE_ONLY and no REPLACE, as `wg`
    does. Returns pyroute2 ``wgmsg`` attribute lists holding key values: send, never log.
    """
    device: list[list[Any]] = []
    if "private_key" in changes.device and desired.private_key:
        device.append(["WGDEVICE_A_PRIVATE_KEY", desired.private_key.reveal()])
    if "listen_port" in changes.device:
        device.append(["WGDEVICE_A_LISTEN_PORT", desired.listen_port or 0])
    if "fwmark" in changes.device:
        device.append(["WGDEVICE_A_FWMARK", desired.fwmark or 0])
    filler = _MessageFiller(desired.name, device, budget)
    order = {"remove": 0, "update": 1, "add": 2}
    for ch in sorted(changes.peers, key=lambda c: order[c.action]):
        if ch.action == "remove":
            filler.add(
                [["WGPEER_A_PUBLIC_KEY", ch.public_key], ["WGPEER_A_FLAGS", WGPEER_F_REMOVE_ME]],
                _NLA_PEER_BASE,
            )
            continue
        _add_peer(filler, desired.peers[ch.public_key], f"{where}: peer {ch.public_key}")
    filler.flush()
    return filler.messages


def _add_peer(filler: _MessageFiller, peer: Peer, where: str) -> None:
    """One added or updated peer, its allowed IPs spread over as many messages as they need."""
    attrs: list[list[Any]] = [
        ["WGPEER_A_PUBLIC_KEY", peer.public_key],
        ["WGPEER_A_FLAGS", WGPEER_F_REPLACE_ALLOWEDIPS],
        ["WGPEER_A_PRESHARED_KEY", peer.preshared_key.reveal() if peer.preshared_key else ZERO_KEY_B64],
        ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", peer.persistent_keepalive or 0],
    ]
    if peer.endpoint:
        attrs.append(["WGPEER_A_ENDPOINT", _endpoint_value(peer.endpoint, where)])
    nests = [_allowed_ip_nest(ip) for ip in peer.allowed_ips or ()]
    size = _NLA_PEER_BASE + _NLA_PEER_FIELDS
    if size + sum(s for _n, s in nests) > filler.room():
        filler.flush()
    chunk: list[dict[str, Any]] = []
    for nest, nest_size in nests:
        if chunk and size + nest_size > filler.room():
            filler.add([*attrs, ["WGPEER_A_ALLOWEDIPS", chunk]], size)
            filler.flush()
            # the rest of the list: append to the peer just written, never create one
            attrs = [["WGPEER_A_PUBLIC_KEY", peer.public_key], ["WGPEER_A_FLAGS", WGPEER_F_UPDATE_ONLY]]
            chunk, size = [], _NLA_PEER_BASE
        chunk.append(nest)
        size += nest_size
    filler.add([*attrs, ["WGPEER_A_ALLOWEDIPS", chunk]] if chunk else attrs, size)


def _netlink_read(name: str, where: str) -> Interface:
    """The kernel interface as the netlink reader sees it (the same code the daemon syncs with)."""
    from wgsyncd.sources import netlink

    try:
        return netlink.read_interface(name, NETLINK_TIMEOUT)
    except netlink.FamilyMissing:
        raise RestoreError(f"{where}: the WireGuard kernel module is not loaded (no genl family)") from None


def _netlink_send(name: str, messages: list[list[list[Any]]], where: str) -> None:
    """Send each message with NLM_F_ACK and wait for its answer; the first error stops.

    The kernel applies each message whole, but not the series: an error after the
    first message leaves the interface partly changed, which the message says (a
    second restore --apply finishes the job, it only writes what still differs).
    """
    from wgsyncd.sources.kernel import InterfaceReadError
    from wgsyncd.sources.netlink import _bounded, _describe

    def send() -> None:
        from pyroute2 import WireGuard
        from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
        from pyroute2.netlink.generic.wireguard import wgmsg

        wg = WireGuard()
        try:
            for index, attrs in enumerate(messages):
                msg = wgmsg()
                msg["cmd"] = WG_CMD_SET_DEVICE
                msg["version"] = WG_GENL_VERSION
                msg["attrs"] = attrs
                try:
                    wg.nlm_request(msg, msg_type=wg.prid, msg_flags=NLM_F_REQUEST | NLM_F_ACK)
                except Exception as exc:
                    total = len(messages)
                    done = "nothing was changed" if index == 0 else f"{index} of {total} applied"
                    raise RestoreError(
                        f"{where}: netlink refused message {index + 1} of {total} ({_describe(exc)}); "
                        f"{done}, run restore --apply again to finish"
                    ) from None
        finally:
            wg.close()

    try:
        _bounded(send, NETLINK_TIMEOUT, f"{name} netlink set")
    except RestoreError:
        raise
    except InterfaceReadError as exc:  # the deadline passed: says which step and how long
        raise RestoreError(f"{where}: {exc}; the interface may be partly changed") from None
    except Exception as exc:  # the socket itself (no module, no permission)
        raise RestoreError(f"{where}: netlink: {_describe(exc)}") from None


def _netlink_apply(desired: Interface, changes: InterfaceChanges, where: str) -> None:
    """Write ``changes`` through netlink, then read the interface back: it must run the version.

    The read-back catches what a silent kernel or library quirk would hide (a peer
    not removed, allowed IPs appended instead of replaced): such a restore fails
    naming the peers and fields, never a key value.
    """
    _netlink_send(desired.name, netlink_messages(desired, changes, where), where)
    left = diff_interface(_netlink_read(desired.name, where), desired, "netlink")
    if not left.empty:
        shown = [f"{p.public_key} {p.action} {','.join(p.fields)}".strip() for p in left.peers[:3]]
        raise RestoreError(
            f"{where}: after the netlink write the interface still differs: {left.summary()} "
            f"(e.g. {'; '.join(shown) or 'device ' + ','.join(left.device)})"
        )


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
            _netlink_apply(desired, changes, where)
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


# ---------------------------------------------------------------- target: wgrest


@dataclass
class WgrestChanges:
    """What restore did (or would do) to one wgrest device."""

    device: str
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line of counts."""
        return (
            f"{self.device} (wgrest): {len(self.created)} peers created, {len(self.updated)} updated, "
            f"{len(self.deleted)} deleted"
        )


class _Http:
    """A tiny wgrest client for restore: bearer token, timeouts, errors naming the URL only."""

    def __init__(self, base: str, token: Secret | None, timeout: float) -> None:
        import requests

        self.base = base.rstrip("/") + "/"
        self.session = requests.Session()
        self.timeout = timeout
        self.last_link: str | None = None
        if token:
            self.session.headers["Authorization"] = f"Bearer {token.reveal()}"

    def url(self, path: str) -> str:
        """Absolute URL of an API path."""
        return urljoin(self.base, path.lstrip("/"))

    def call(
        self, method: str, url: str, body: dict[str, Any] | None = None, ok: tuple[int, ...] = (200,)
    ) -> Any:
        """One request; a transport error or unexpected status becomes RestoreError naming the URL."""
        import requests

        shown = url.split("?")[0]
        try:
            resp = self.session.request(method, url, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise RestoreError(f"{method} {shown}: {type(exc).__name__}") from None
        if resp.status_code not in ok:
            try:
                msg = str(resp.json().get("message", ""))[:200]
            except ValueError:
                msg = ""
            raise RestoreError(f"{method} {shown}: HTTP {resp.status_code} {msg}".rstrip())
        self.last_link = resp.links.get("next", {}).get("url")
        try:
            return resp.json() if resp.content else None
        except ValueError:
            raise RestoreError(f"{method} {shown}: answer is not JSON") from None

    def list_peers(self, device: str) -> list[dict[str, Any]]:
        """Every peer of a device, following the Link header's ``next`` (never past this server)."""
        url: str | None = self.url(f"v1/devices/{quote(device)}/peers/?per_page=100")
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        while url and url not in seen:
            seen.add(url)
            page = self.call("GET", url)
            if not isinstance(page, list):
                raise RestoreError(f"GET {url.split('?')[0]}: expected a list of peers")
            out.extend(page)
            nxt = self.last_link
            url = urljoin(url, nxt) if nxt else None
            if url and not url.startswith(self.base):
                raise RestoreError(f"GET {self.base}: Link header points to another server; refused")
        return out


def _go_seconds(text: str | None) -> int:
    """A Go duration like ``25s`` / ``1m30s`` in whole seconds (0 when empty)."""
    total = 0.0
    for num, unit in re.findall(r"([\d.]+)(h|m(?!s)|s|ms|us|µs|ns)", text or ""):
        total += (
            float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}[unit]
        )
    return int(total)


def _peer_body(peer: Peer, fields: set[str] | None) -> dict[str, Any]:
    """The PeerCreateOrUpdateRequest for ``peer`` (all fields when ``fields`` is None)."""
    body: dict[str, Any] = {}
    if fields is None:
        body["public_key"] = peer.public_key
        if peer.private_key:
            body["private_key"] = peer.private_key.reveal()
    if (fields is None or "preshared_key" in fields) and peer.preshared_key:
        body["preshared_key"] = peer.preshared_key.reveal()
    if fields is None or "allowed_ips" in fields:
        body["allowed_ips"] = list(peer.allowed_ips or ())
    if fields is None or "persistent_keepalive" in fields:
        body["persistent_keepalive_interval"] = f"{peer.persistent_keepalive or 0}s"
    if (fields is None or "endpoint" in fields) and peer.endpoint:
        body["endpoint"] = peer.endpoint
    return body


def _wgrest_diff(peer: Peer, have: dict[str, Any]) -> set[str]:
    """Fields of ``peer`` that differ from wgrest's JSON (secrets compared by fingerprint)."""
    diff = set()
    theirs = have.get("preshared_key") or None
    if _fp(peer.preshared_key) != (Secret(theirs).fingerprint() if theirs else None):
        diff.add("preshared_key")
    if _networks(peer.allowed_ips) != _networks(have.get("allowed_ips")):
        diff.add("allowed_ips")
    if (peer.persistent_keepalive or 0) != _go_seconds(have.get("persistent_keepalive_interval")):
        diff.add("persistent_keepalive")
    if peer.endpoint and peer.endpoint != (have.get("endpoint") or None):
        diff.add("endpoint")
    return diff


def to_wgrest(
    loaded: Loaded,
    url: str,
    *,
    token: Secret | None = None,
    dry_run: bool = False,
    timeout: float = HTTP_TIMEOUT,
) -> list[WgrestChanges]:
    """Recreate each device's peers through wgrest (v1 and v2 share these endpoints).

    Every device is checked and listed before the first write; peers disabled in the
    conf are not created. wgrest cannot create devices (v1 answers 501), so a device
    that does not exist refuses the restore.
    """
    if not url.startswith(("http://", "https://")):
        raise RestoreError(f"--to-wgrest {url}: must start with http:// or https://")
    http = _Http(url, token, timeout)
    work = []
    for name, desired in loaded.interfaces.items():
        dev_url = http.url(f"v1/devices/{quote(name)}/")
        try:
            http.call("GET", dev_url)
        except RestoreError as exc:
            raise RestoreError(f"{loaded.label}: wgrest device {name}: {exc}") from None
        current = {p["public_key"]: p for p in http.list_peers(name) if p.get("public_key")}
        work.append((name, desired, current))
    out = []
    for name, desired, current in work:
        ch = WgrestChanges(name)
        want = running_peers(desired)
        peers_url = http.url(f"v1/devices/{quote(name)}/peers/")
        for pub, peer in want.items():
            if pub not in current:
                ch.created.append(pub)
                if not dry_run:
                    http.call("POST", peers_url, _peer_body(peer, None), ok=(200, 201))
                continue
            diff = _wgrest_diff(peer, current[pub])
            if diff:
                ch.updated.append(pub)
                if not dry_run:
                    http.call("PATCH", _peer_url(http, name, pub), _peer_body(peer, diff))
        for pub in current:
            if pub not in want:
                ch.deleted.append(pub)
                if not dry_run:
                    http.call("DELETE", _peer_url(http, name, pub), ok=(200, 204))
        out.append(ch)
    return out


def _peer_url(http: _Http, device: str, public_key: str) -> str:
    """``/v1/devices/{name}/peers/{urlSafePubKey}/`` (URL-safe base64 with padding)."""
    safe = base64.urlsafe_b64encode(base64.b64decode(public_key)).decode()
    return http.url(f"v1/devices/{quote(device)}/peers/{quote(safe)}/")


def read_token(path: str) -> Secret:
    """The wgrest bearer token from a file (first line); errors name the file only."""
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise RestoreError(f"--token-file {path}: cannot read: {exc.strerror}") from None
    if not text:
        raise RestoreError(f"--token-file {path}: empty")
    return Secret(text.splitlines()[0].strip())


# ---------------------------------------------------------------- history


def history(conn: Any, host_id: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The host's versions, newest first, as plain dicts (for text and --json output)."""
    from wgsyncd.store import versions

    if not versions.host_known(conn, host_id):
        raise RestoreError(f"host {host_id}: unknown host (it never synced to this database)")
    return [
        {
            "version": r.version,
            "created_at": r.created_at.isoformat(),
            "sync_id": str(r.sync_id),
            "interfaces": r.interfaces,
            "peers": r.peers,
            "sealed": r.sealed,
            "recovery_key_fp": r.recovery_key_fp,
        }
        for r in versions.list_versions(conn, host_id, limit)
    ]


def unsealed_warning(conn: Any, host_id: str) -> str | None:
    """The `status` warning when the host's latest version has no sealed secrets, else None."""
    from wgsyncd.store import versions

    rows = versions.list_versions(conn, host_id, 1)
    if rows and not rows[0].sealed:
        return (
            f"warning: host {host_id}: latest config version {rows[0].version} has no sealed secrets: "
            "restore will be incomplete: no recovery_public_key configured"
        )
    return None


def as_json(changes: Any) -> Any:
    """Restore results as JSON-able data (dataclasses to dicts); holds no secrets."""
    from wgsyncd.render import plain

    return json.loads(json.dumps(plain(changes), default=str))
