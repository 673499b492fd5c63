"""Test bed: podman with a private store, offline (TESTBEDS.md section 4).

One store per test module under /tmp (``--root``/``--runroot``, and a private
``--network-config-dir`` so podman-compose's `network create` never touches the
host's /etc/containers), this VM's flags, the debootstrap base imported as
``debian:bookworm-slim`` so ``FROM`` builds with ``--pull=never``, and images that
are slow to build (apt inside) cached under .cache/ as `podman save` archives keyed
by the hash of what they are built from.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
# flags this VM needs (TESTBEDS.md section 4): crun refuses the hybrid cgroups
GLOBAL_FLAGS = ("--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file")
RUN_FLAGS = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768")
# `podman build` here: RUN apt-get needs no CNI/netavark setup; docker format keeps HEALTHCHECK
BUILD_FLAGS = ("--pull=never", "--network=host", "--format", "docker")


@dataclass
class Podman:
    """podman with a private store (--root/--runroot) and this VM's flags."""

    root: Path

    def global_flags(self) -> list[str]:
        """The flags that select the private store, before any subcommand."""
        return [
            "--root",
            str(self.root / "root"),
            "--runroot",
            str(self.root / "runroot"),
            "--network-config-dir",
            str(self.root / "networks"),
            *GLOBAL_FLAGS,
        ]

    def cmd(self, *args: str) -> list[str]:
        """The full command line for ``podman ARGS`` against the private store."""
        return ["podman", *self.global_flags(), *args]

    def run(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run podman; a failure names the subcommand and shows its stderr."""
        proc = subprocess.run(self.cmd(*args), capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args[:3])} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
            )
        return proc

    def wrapper(self) -> Path:
        """An executable that is this podman (for tools that take a podman path)."""
        path = self.root / "podman"
        if not path.exists():
            quoted = " ".join(f"'{arg}'" for arg in self.global_flags())
            path.write_text(f'#!/bin/sh\nexec podman {quoted} "$@"\n')
            path.chmod(0o755)
        return path

    def has_image(self, ref: str) -> bool:
        """True when the private store holds ``ref``."""
        return self.run("image", "exists", ref, check=False).returncode == 0

    def close(self) -> None:
        """Remove every container, image and volume, then the store itself."""
        # not `system reset`: that also touches the host's network configs
        self.run("rm", "--all", "--force", timeout=120, check=False)
        self.run("volume", "rm", "--all", "--force", timeout=120, check=False)
        self.run("rmi", "--all", "--force", timeout=120, check=False)
        subprocess.run(
            ["umount", "-R", str(self.root / "root" / "overlay")], capture_output=True, check=False
        )
        shutil.rmtree(self.root, ignore_errors=True)


def podman_missing() -> str | None:
    """Why the container bed cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (podman with a private store, debootstrap)"
    for tool, pkg in (("podman", "podman"), ("runc", "runc"), ("debootstrap", "debootstrap")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {pkg})"
    return None


def start_store(base_tar: Path) -> Podman:
    """A new private store holding the debootstrap base as ``debian:bookworm-slim``."""
    podman = Podman(Path(tempfile.mkdtemp(prefix="wgs-podman-", dir="/tmp")))
    (podman.root / "networks").mkdir()
    try:
        podman.run("import", "--change", 'CMD ["bash"]', str(base_tar), BASE_IMAGE, timeout=300)
    except BaseException:
        podman.close()
        raise
    return podman


def cached_image(podman: Podman, tag: str, containerfile: Path, cache: Path, salt: str = "") -> str:
    """Build ``tag`` from ``containerfile`` (empty context) or load it from the cache.

    Keyed by the Containerfile's bytes and ``salt`` (e.g. the base tarball's name):
    a changed recipe builds anew; an archive is renamed into place only when complete.
    """
    key = hashlib.sha256(containerfile.read_bytes() + salt.encode()).hexdigest()[:12]
    archive = cache / f"podman-image-{containerfile.stem}-{key}.tar"
    if archive.exists():
        podman.run("load", "-i", str(archive), timeout=300)
        if podman.has_image(tag):  # the archive was saved from ``tag``: load restores it
            return tag
    context = Path(tempfile.mkdtemp(prefix="wgs-ctx-", dir="/tmp"))
    try:
        podman.run("build", *BUILD_FLAGS, "-t", tag, "-f", str(containerfile), str(context), timeout=900)
    finally:
        shutil.rmtree(context, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)  # left by an interrupted save
    podman.run("save", "-o", str(partial), tag, timeout=300)
    partial.rename(archive)
    return tag
