"""The kernel source: what the running WireGuard interfaces actually do right now.

Three ways in, chosen by ``kernel.backend``:

- ``netlink``: kernel interfaces through a netlink socket (see :mod:`wgsyncd.sources.netlink`);
- ``uapi``: userspace implementations (wireguard-go, boringtun) through their control
  sockets (see :mod:`wgsyncd.sources.uapi`);
- ``auto``: both, netlink winning when both see a name;
- ``wg``: ``wg show all dump``, for hosts where neither library path is wanted.

Every backend produces the same :class:`~wgsyncd.state.Interface` values, formatted
exactly the way ``wg show dump`` prints them (:mod:`wgsyncd.wire.values`), so the
sources agree with each other and ``parse_wg_dump`` (:mod:`wgsyncd.wire.wgdump`) can
serve as the reference in tests. This module only reads, and only chooses: the
protocols are in :mod:`wgsyncd.wire`.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from wgsyncd import validate
from wgsyncd.config import KernelConfig
from wgsyncd.sources import netlink, uapi
from wgsyncd.state import Source, SourceError, SourceResult
from wgsyncd.wire import wgdump
from wgsyncd.wire.values import (  # noqa: F401  (re-exported: the kernel source's names)
    INTERFACE_FIELDS,
    MAX_HANDSHAKE_SEC,
    PEER_FIELDS,
    InterfaceReadError,
    RawPeer,
    handshake_time,
    key_from_wire,
    make_interface,
    make_peer,
)
from wgsyncd.wire.wgdump import NONE, DumpParseError, parse_wg_dump  # noqa: F401

log = logging.getLogger(__name__)


MODULE_DIR = "/sys/module"


def module_absent() -> bool:
    """Whether sysfs says for sure that this kernel has no WireGuard (not loaded, not built in).

    /sys/module/wireguard exists whenever the module is loaded, and for a built-in
    one too (it declares MODULE_VERSION). Then no kernel interface can exist, so
    "auto" skips the netlink link dump on wireguard-go hosts. Without a readable
    /sys/module nothing is sure: try.
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
    """Kernel interfaces via netlink; a host without the module simply has none."""
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
    interfaces, errors = wgdump.parse_dump(proc.stdout, None)
    failed = wgdump.stderr_interfaces(proc.stderr)
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
