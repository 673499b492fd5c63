"""Restore's ordering rules: which targets run, and every target checked before the first write.

Each target (conf files, running interfaces, wgrest) checks everything it needs before
its own first write. That is not enough with several targets: the files would be
written before the interfaces are found missing, a half-done restore. So with more
than one target, every target first runs as a dry run, and only when all of them
passed does the first one write. The order is fixed (files, interfaces, wgrest), so
the conf files that make the next boot right are written before the running state.

The command line only parses options into :class:`Targets` and prints what
:func:`run` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wgsyncd.restore.files import to_dir
from wgsyncd.restore.loading import Loaded
from wgsyncd.restore.running import apply
from wgsyncd.restore.wgrest import to_wgrest
from wgsyncd.state import Secret


@dataclass(frozen=True)
class Targets:
    """Where one restore writes: conf files (``to_dir``), running interfaces (``apply``), wgrest."""

    to_dir: str | None = None
    apply: bool = False
    apply_via: str = "auto"  # auto | uapi | wg | netlink
    socket_dir: str = "/run/wireguard"
    wg_command: str = "wg"
    wgrest_url: str | None = None
    token: Secret | None = None
    insecure: bool = False  # --to-wgrest over plain http:// to another machine

    def chosen(self) -> bool:
        """At least one target: restore without one would do nothing and say nothing."""
        return bool(self.to_dir or self.apply or self.wgrest_url)

    def runners(self, loaded: Loaded) -> dict[str, Callable[[bool], Any]]:
        """The chosen targets in write order, each a call taking ``dry_run``."""
        out: dict[str, Callable[[bool], Any]] = {}
        if self.to_dir:
            directory = self.to_dir
            out["files"] = lambda dry: to_dir(loaded, directory, dry_run=dry)
        if self.apply:
            out["interfaces"] = lambda dry: apply(
                loaded,
                socket_dir=self.socket_dir,
                wg_command=self.wg_command,
                via=self.apply_via,
                dry_run=dry,
            )
        if self.wgrest_url:
            url = self.wgrest_url
            out["wgrest"] = lambda dry: to_wgrest(
                loaded, url, token=self.token, dry_run=dry, insecure=self.insecure
            )
        return out


def run(
    loaded: Loaded, targets: Targets, *, dry_run: bool, phase: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Restore ``loaded`` to every chosen target; {"files": [...], "interfaces": [...], "wgrest": [...]}.

    A RestoreError from any target's check ends the restore before anything is
    written (module doc); ``phase`` is told each step (the progress line).
    """
    runners = targets.runners(loaded)
    size = (
        f"{len(loaded.interfaces)} interfaces, {sum(len(i.peers) for i in loaded.interfaces.values())} peers"
    )
    if not dry_run and len(runners) > 1:
        for key, check in runners.items():
            phase(f"checking {key} ({size})")
            check(True)
    out: dict[str, Any] = {}
    for index, (key, run_target) in enumerate(runners.items()):
        phase(f"{key} ({index + 1}/{len(runners)}): {size}")
        out[key] = run_target(dry_run)
    return out


def outcome(loaded: Loaded, results: dict[str, Any], dry_run: bool) -> dict[str, Any]:
    """What the command prints (text or JSON): the version restored and each target's results."""
    return {
        "host_id": loaded.host_id,
        "version": loaded.version,
        "created_at": loaded.created_at.isoformat(),
        "without_secrets": loaded.without_secrets,
        "warnings": loaded.warnings,
        "vouched": loaded.vouched,
        **results,
        "dry_run": dry_run,
    }
