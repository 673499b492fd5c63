"""The kernel source: what the running WireGuard interfaces actually do right now.

Three ways in, chosen by ``kernel.backend``:

- ``netlink``: kernel interfaces through pyroute2 (see :mod:`wgsyncd.sources.netlink`);
- ``uapi``: userspace implementations (wireguard-go, boringtun) through their control
  sockets (see :mod:`wgsyncd.sources.uapi`);
- ``auto``: both, netlink winning when both see a name;
- ``wg``: ``wg show all dump``, for hosts where neither library path is wanted.

Every backend produces the same :class:`~wgsyncd.state.Interface` values, formatted
exactly the way ``wg show dump`` prints them, so the sources agree with each other and
``parse_wg_dump`` can serve as the reference in tests. This module only reads.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from wgsyncd import validate
from wgsyncd.canonical import ZERO_KEY_B64, parse_port
from wgsyncd.config import KernelConfig
from wgsyncd.state import (
    WIRE_PEER_FIELDS,
    Interface,
    Peer,
    Secret,
    Source,
    SourceError,
    SourceResult,
    StateError,
    parse_key,
    public_key_from_private,
)

log = logging.getLogger(__name__)

NONE = "(none)"

# the fields a kernel read always knows, even when the value is "none" (None / 0)
INTERFACE_FIELDS = ("private_key", "public_key", "listen_port", "fwmark", "implementation")
PEER_FIELDS = WIRE_PEER_FIELDS
_IFACE_PROVENANCE = dict.fromkeys(INTERFACE_FIELDS, Source.KERNEL)
_PEER_PROVENANCE = dict.fromkeys(PEER_FIELDS, Source.KERNEL)


class InterfaceReadError(Exception):
    """One interface could not be read completely; the message never holds a key value."""


# the last second of year 9999: the latest time a datetime (and PostgreSQL's column) can hold
MAX_HANDSHAKE_SEC = 253402300799


def handshake_time(seconds: int) -> datetime | None:
    """0 means "never" (None); otherwise an aware UTC datetime with wg's seconds precision.

    A negative or absurd value (a broken daemon, a fuzzed reply) is a StateError, not a
    crash in datetime: the reader reports the interface as unreadable.
    """
    if seconds == 0:
        return None
    if not 0 < seconds <= MAX_HANDSHAKE_SEC:
        raise StateError("latest handshake time out of range")
    return datetime.fromtimestamp(seconds, tz=UTC)


def key_from_wire(value: bytes | str, where: str) -> str:
    """A base64 key from what a backend hands over: base64 text/bytes, raw 32 bytes, or hex.

    pyroute2 gives base64 *bytes*; UAPI gives 64 hex characters. Validated with
    :func:`state.parse_key` so a malformed key is an error naming ``where``, never its value.
    """
    if isinstance(value, bytes):
        value = base64.b64encode(value).decode() if len(value) == 32 else value.decode("ascii", "replace")
    elif len(value) == 64:
        try:  # 64 hex digits are exactly 32 bytes: valid by construction
            return base64.b64encode(bytes.fromhex(value)).decode()
        except ValueError:
            raise StateError(f"{where}: not a hex WireGuard key") from None
    return parse_key(value, where)


def make_interface(
    name: str,
    private_key: str | None,
    public_key: str | None,
    listen_port: int,
    fwmark: int,
    implementation: str | None,
) -> Interface:
    """An Interface with kernel provenance; derives the public key when only the private one is known.

    wireguard-go's UAPI does not report the public key; ``wg`` derives it the same way.
    """
    secret = Secret(private_key) if private_key else None
    if secret is not None and public_key is None:
        public_key = public_key_from_private(secret)
    return Interface(
        name=name,
        private_key=secret,
        public_key=public_key,
        listen_port=listen_port,
        fwmark=fwmark,
        implementation=implementation,
        provenance=dict(_IFACE_PROVENANCE),
    )


def make_peer(
    public_key: str,
    preshared_key: str | None,
    allowed_ips: tuple[str, ...],
    endpoint: str | None,
    keepalive: int,
    handshake_sec: int,
    rx_bytes: int,
    tx_bytes: int,
) -> Peer:
    """A Peer with kernel provenance; an all-zero preshared key means "none"."""
    psk = None if preshared_key is None or preshared_key == ZERO_KEY_B64 else Secret(preshared_key)
    return Peer(
        public_key=public_key,
        preshared_key=psk,
        allowed_ips=allowed_ips,
        endpoint=endpoint,
        persistent_keepalive=keepalive,
        latest_handshake=handshake_time(handshake_sec),
        rx_bytes=rx_bytes,
        tx_bytes=tx_bytes,
        provenance=_PEER_PROVENANCE,  # shared, never changed (see state.shared)
    )


class RawPeer:
    """One peer's wire values while they are being collected (netlink messages, UAPI lines).

    Shared by both readers: a peer can arrive in pieces (netlink splits allowed IPs
    across messages), so values accumulate here and become a Peer once, at the end.
    """

    __slots__ = ("allowed", "endpoint", "hs", "keepalive", "psk", "public", "rx", "tx")

    def __init__(self, public: str) -> None:
        self.public = public
        self.psk: str | None = None
        self.endpoint: str | None = None
        self.hs = 0
        self.rx = 0
        self.tx = 0
        self.keepalive = 0
        self.allowed: list[str] = []

    def build(self) -> Peer:
        """The finished Peer, with kernel provenance."""
        return make_peer(
            self.public,
            self.psk,
            tuple(self.allowed),
            self.endpoint,
            self.keepalive,
            self.hs,
            self.rx,
            self.tx,
        )


# ---------------------------------------------------------------- `wg show dump`


class DumpParseError(ValueError):
    """A ``wg show dump`` line that cannot be understood; names the line number, not its content."""

    def __init__(self, message: str, interface: str | None) -> None:
        super().__init__(message)
        self.interface = interface


def _dump_key(text: str, where: str) -> str | None:
    """A dump key column: ``(none)`` -> None, else a validated base64 key."""
    return None if text == NONE else parse_key(text, where)


def _dump_interface(name: str, cols: list[str], where: str) -> Interface:
    """``private-key public-key listen-port fwmark`` -> Interface."""
    private, public, port, fwmark = cols
    return make_interface(
        name,
        _dump_key(private, f"{where}: private key"),
        _dump_key(public, f"{where}: public key"),
        parse_port(port),
        0 if fwmark == "off" else int(fwmark, 0),
        None,
    )


def _dump_peer(cols: list[str], where: str) -> Peer:
    """``public psk endpoint allowed-ips handshake rx tx keepalive`` -> Peer."""
    public, psk, endpoint, allowed, handshake, rx, tx, keepalive = cols
    return make_peer(
        parse_key(public, f"{where}: public key"),
        _dump_key(psk, f"{where}: preshared key"),
        () if allowed == NONE else tuple(allowed.split(",")),
        None if endpoint == NONE else endpoint,
        0 if keepalive == "off" else int(keepalive),
        int(handshake),
        int(rx),
        int(tx),
    )


def _parse_dump(text: str, name: str | None) -> tuple[dict[str, Interface], dict[str, str]]:
    """Parse dump text into interfaces plus per-interface errors (bad interfaces are dropped).

    ``wg show all dump`` prefixes each line with the interface name (5 / 9 columns);
    ``wg show NAME dump`` does not (4 / 8 columns) and needs ``name``.
    """
    interfaces: dict[str, Interface] = {}
    errors: dict[str, str] = {}
    current: str | None = name
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) in (5, 9):
            current, cols = cols[0], cols[1:]
        elif len(cols) not in (4, 8) or name is None:
            errors.setdefault(current or "?", f"line {lineno}: unexpected number of columns ({len(cols)})")
            interfaces.pop(current or "?", None)  # never hand on a half-read interface
            continue
        if current in errors:
            continue
        where = f"line {lineno}"
        try:
            if len(cols) == 4:
                interfaces[current] = _dump_interface(current, cols, where)
            elif current not in interfaces:
                raise ValueError("peer line before its interface line")
            else:
                peer = _dump_peer(cols, where)
                interfaces[current].peers[peer.public_key] = peer
        except (ValueError, StateError) as exc:
            msg = str(exc) if isinstance(exc, StateError) else f"{where}: {_safe_reason(exc)}"
            errors[current] = msg
            interfaces.pop(current, None)
    return interfaces, errors


def _safe_reason(exc: Exception) -> str:
    """A parse failure's reason without echoing input (int() puts the bad text in its message)."""
    text = str(exc)
    return "bad number" if "invalid literal" in text else text


def parse_wg_dump(text: str, name: str | None = None) -> dict[str, Interface]:
    """Parse ``wg show all dump`` (or ``wg show NAME dump`` with ``name``) into Interfaces.

    Also the reference the tests compare every other backend against. Raises
    :class:`DumpParseError` on the first malformed line (no key values in the message).
    """
    interfaces, errors = _parse_dump(text, name)
    if errors:
        ifname, message = next(iter(errors.items()))
        raise DumpParseError(f"wg dump: interface {ifname}: {message}", ifname)
    return interfaces


# ---------------------------------------------------------------- read()

MODULE_DIR = "/sys/module"


def module_absent() -> bool:
    """Whether sysfs says for sure that this kernel has no WireGuard (not loaded, not built in).

    /sys/module/wireguard exists whenever the module is loaded, and for a built-in
    one too (it declares MODULE_VERSION). Then no kernel interface can exist, so
    "auto" skips netlink and never imports pyroute2 (~10 MB and 0.1-0.5 s a process
    on wireguard-go hosts). Without a readable /sys/module nothing is sure: try.
    """
    return os.path.isdir(MODULE_DIR) and not os.path.exists(os.path.join(MODULE_DIR, "wireguard"))


def read(
    cfg: KernelConfig, want: Callable[[str], bool] | None = None, blocks: dict[str, dict] | None = None
) -> SourceResult:
    """Read every running interface ``want`` accepts (None = all) with the configured backend.

    An interface that fails mid-read is reported as a SourceError naming it and is
    left out entirely, so the store never sees it half-read. ``blocks``: the caller's
    UAPI memo (memo.Memo.uapi), so unchanged peer blocks are not parsed again.
    """
    result = SourceResult(source=Source.KERNEL)
    if not cfg.enabled:
        result.available = False
        return result
    accept = want or (lambda _name: True)
    if cfg.backend == "wg":
        _read_wg(cfg, accept, result)
        return result
    seen: set[str] = set()
    if cfg.backend == "netlink" or (cfg.backend == "auto" and not module_absent()):
        _read_netlink(cfg, accept, result, seen)
    if cfg.backend in ("auto", "uapi"):
        _read_uapi(cfg, accept, result, seen, {} if blocks is None else blocks)
    return result


def _error(result: SourceResult, where: str, message: str, interface: str | None) -> None:
    """Record one problem; the cycle logs it once, at error level, with the others."""
    result.errors.append(SourceError(source=Source.KERNEL, where=where, message=message, interface=interface))


def _read_netlink(
    cfg: KernelConfig, accept: Callable[[str], bool], result: SourceResult, seen: set[str]
) -> None:
    """Kernel interfaces via pyroute2; a host without the module simply has none."""
    from wgsyncd.sources import netlink

    try:
        names = netlink.list_interfaces(cfg.timeout)
    except InterfaceReadError as exc:
        _error(result, "netlink (link dump)", str(exc), None)
        return
    for name in names:
        if not accept(name):
            continue
        seen.add(name)
        try:
            result.interfaces[name] = netlink.read_interface(name, cfg.timeout)
        except netlink.FamilyMissing:
            seen.discard(name)
            log.debug("wireguard genl family missing: no kernel interfaces")
            return
        except InterfaceReadError as exc:
            _error(result, f"{name} (netlink)", str(exc), name)


def _read_uapi(
    cfg: KernelConfig, accept: Callable[[str], bool], result: SourceResult, seen: set[str], blocks: dict
) -> None:
    """Userspace interfaces via ``<socket_dir>/<name>.sock``; names netlink already read are skipped."""
    from wgsyncd.sources import uapi

    try:
        names = uapi.list_interfaces(cfg.socket_dir)
    except OSError as exc:
        _error(result, cfg.socket_dir, f"cannot list control sockets: {exc.strerror}", None)
        return
    uapi.forget_others({uapi.socket_path(cfg.socket_dir, n) for n in names if accept(n)}, blocks)
    for name in names:
        if name in seen or not accept(name):
            continue
        try:  # a file name, not a kernel answer: a newline or a path must not become a name
            validate.link_name(name)
        except validate.Invalid as exc:
            _error(result, f"{cfg.socket_dir}/{validate.shown(name)}.sock", exc.message, None)
            continue
        path = uapi.socket_path(cfg.socket_dir, name)
        try:
            iface = uapi.read_interface(name, path, cfg.timeout, blocks)
        except uapi.StaleSocket:
            log.debug("%s: nobody listening (stale socket), not an interface", path)
            continue
        except InterfaceReadError as exc:
            _error(result, f"{name} ({path})", str(exc), name)
            continue
        seen.add(name)
        result.interfaces[name] = iface


def _read_wg(cfg: KernelConfig, accept: Callable[[str], bool], result: SourceResult) -> None:
    """``wg show all dump`` with a timeout; per-interface problems stay per interface."""
    cmd = [cfg.wg_command, "show", "all", "dump"]
    where = f"{cfg.wg_command} show all dump"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=cfg.timeout, check=False)
    except FileNotFoundError:
        _error(result, where, f"command not found: {cfg.wg_command}", None)
        return
    except subprocess.TimeoutExpired:
        _error(result, where, f"no answer within {cfg.timeout:g} s", None)
        return
    except OSError as exc:
        _error(result, where, f"cannot run: {exc.strerror}", None)
        return
    interfaces, errors = _parse_dump(proc.stdout, None)
    failed = _wg_stderr_interfaces(proc.stderr)
    if proc.returncode != 0 and not interfaces and not failed:
        first = (proc.stderr.strip().splitlines() or ["(no message)"])[0][:200]
        _error(result, where, f"exit status {proc.returncode}: {first}", None)
        return
    for name, message in {**failed, **errors}.items():
        if accept(name):
            _error(result, f"{name} ({where})", message, name)
    sockets = Path(cfg.socket_dir)
    for name, iface in interfaces.items():
        if name in failed or not accept(name):
            continue
        iface.implementation = "userspace" if (sockets / f"{name}.sock").exists() else "kernel"
        result.interfaces[name] = iface


def _wg_stderr_interfaces(stderr: str) -> dict[str, str]:
    """``Unable to access interface NAME: reason`` lines from wg, by interface name."""
    failed: dict[str, str] = {}
    prefix = "Unable to access interface "
    for line in stderr.splitlines():
        if line.startswith(prefix):
            name, _, reason = line[len(prefix) :].partition(":")
            failed[name.strip()] = reason.strip()[:200] or "unable to access"
    return failed
