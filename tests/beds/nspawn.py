"""Test bed: real systemd as PID 1 in systemd-nspawn (TESTBEDS.md section 3).

The rootfs (Debian bookworm minbase + systemd + the Python libraries wgsyncd needs
from Debian) is debootstrapped ONCE and cached as a tarball under
/work/main/.cache/, keyed by the package list, so CI can cache it too. The
``booted_container`` fixture boots it once per test run (session scope, volatile
overlay so the cached tree is never changed) and every nspawn test shares it.

Outside root, or without debootstrap / systemd-nspawn, the fixture skips with the
reason; with CI=true a bed that cannot be built FAILS instead, so CI cannot go
green by skipping the only real-systemd test.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO / ".cache"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# Only what the daemon needs at run time, from Debian (what the .deb will depend on).
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "python3",
    "python3-psycopg",
    "python3-pyroute2",
    "python3-sdnotify",
    "python3-click",
    "python3-requests",
    "python3-nacl",
    # debootstrap does not resolve virtual dependencies: name them
    "python3-cffi-backend",
    "libsodium23",
)
BUILD_TIMEOUT = 900.0
BOOT_TIMEOUT = 60.0


class BedError(RuntimeError):
    """The bed could not be built or booted; the message says which step."""


def cache_key() -> str:
    """Key of the cached rootfs: changes whenever the suite or the package list changes."""
    text = "\n".join((SUITE, MIRROR, *PACKAGES))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def rootfs_tarball() -> Path:
    """Where the cached rootfs tarball lives (gitignored; CI may cache .cache/)."""
    return CACHE_DIR / f"nspawn-{SUITE}-{cache_key()}.tar"


def missing_requirements() -> str | None:
    """Why this bed cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, systemd-nspawn, nsenter)"
    for tool in ("debootstrap", "systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install debootstrap systemd-container util-linux)"
    return None


def build_rootfs_tarball(log: Path | None = None) -> Path:
    """debootstrap the rootfs once and pack it; a later call returns the cached tarball.

    Built in a temporary dir and renamed into place, so an interrupted build never
    leaves a half tarball that later runs would trust.
    """
    target = rootfs_tarball()
    if target.exists():
        return target
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="nspawn-build-", dir=CACHE_DIR))
    try:
        root = work / "rootfs"
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(root),
            MIRROR,
        ]
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        try:
            res = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT)
        finally:
            if log:
                out.close()
        if res.returncode != 0:
            raise BedError(f"debootstrap failed with exit {res.returncode} (log: {log})")
        subprocess.run(["systemd-machine-id-setup", f"--root={root}"], check=True, capture_output=True)
        _prepare_rootfs(root)
        return pack_rootfs(root, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def pack_rootfs(root: Path, target: Path) -> Path:
    """Tar ``root`` to ``target`` atomically (a partial tar never looks like a cached one)."""
    partial = target.with_name(target.name + ".partial")
    subprocess.run(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial), "."],
        check=True,
        capture_output=True,
    )
    partial.rename(target)
    return target


def _prepare_rootfs(root: Path) -> None:
    """Make the booted container quiet and fast: no gettys, no apt timers, no network setup."""
    mask_dir = root / "etc/systemd/system"
    for unit in (
        "console-getty.service",
        "getty@.service",
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
        "dpkg-db-backup.timer",
        "e2scrub_all.timer",
        "fstrim.timer",
        "systemd-networkd-wait-online.service",
    ):
        link = mask_dir / unit
        if not link.exists() and not link.is_symlink():
            link.symlink_to("/dev/null")
    # no ipv6/DNS needed: the container shares the host's network (no private network)
    (root / "etc/hostname").write_text("wgsyncd-test\n")


def _unpack(tarball: Path, dest: Path) -> None:
    """Unpack the cached rootfs for one boot (keeps the cache pristine)."""
    subprocess.run(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(dest), "-xf", str(tarball)],
        check=True,
        capture_output=True,
    )


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc), to find the container's PID 1."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the comm field may contain spaces; the ppid is the 2nd field after the ')'
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


def _comm(pid: int) -> str:
    """The process name of ``pid`` ("" when gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@dataclass
class Container:
    """A booted systemd container; run commands in it with :meth:`run`."""

    root: Path
    nspawn: subprocess.Popen
    leader: int
    binds: list[str] = field(default_factory=list)

    def run(
        self, *args: str, check: bool = True, timeout: float = 60.0, input: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run a command inside every namespace of the container (as its root).

        With a clean environment: the host's (a test run's WGSYNCD_*, a venv's PATH)
        must not leak into the container and change what is being tested.
        """
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        cmd = ["nsenter", "-t", str(self.leader), "-a", "--", *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input, env=env)
        if check and res.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
            )
        return res

    def sh(self, script: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run a shell snippet inside the container."""
        return self.run("/bin/sh", "-c", script, check=check, timeout=timeout)

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file into the container's (volatile) tree from the host side."""
        dest = Path(f"/proc/{self.leader}/root") / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        dest.chmod(mode)

    def wait_for(self, what: str, check, timeout: float = 30.0, interval: float = 0.1):
        """Poll ``check()`` until it returns something truthy; fail naming ``what`` at the deadline."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(interval)  # polling a condition with a deadline, not synchronising by sleep
        raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")

    def unit_property(self, unit: str, prop: str) -> str:
        """One property of a unit, as `systemctl show -P` prints it."""
        return self.run("systemctl", "show", "-P", prop, unit).stdout.strip()


def boot(tarball: Path, binds: list[str], workdir: Path, extra_args: tuple[str, ...] = ()) -> Container:
    """Unpack and boot the rootfs with systemd as PID 1; wait until it is running.

    ``extra_args`` go to systemd-nspawn as they are (e.g. ``--capability=CAP_NET_ADMIN``).
    """
    root = workdir / "rootfs"
    root.mkdir()
    _unpack(tarball, root)
    cmd = [
        "systemd-nspawn",
        "--register=no",
        "--keep-unit",
        "-q",
        "-D",
        str(root),
        "-M",
        f"wgsyncdt{os.getpid() % 100000}",
        *[f"--bind-ro={b}" for b in binds if not b.startswith("rw:")],
        *[f"--bind={b[3:]}" for b in binds if b.startswith("rw:")],
        *extra_args,
        "-b",
        "--console=pipe",
    ]
    log = open(workdir / "nspawn.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()
    deadline = time.monotonic() + BOOT_TIMEOUT
    leader = None
    while time.monotonic() < deadline and leader is None:
        if proc.poll() is not None:
            raise BedError(f"systemd-nspawn exited {proc.returncode}: {(workdir / 'nspawn.log').read_text()}")
        leader = next((c for c in _children(proc.pid) if _comm(c) == "systemd"), None)
        if leader is None:
            time.sleep(0.05)  # polling for the leader process with a deadline
    if leader is None:
        proc.kill()
        raise BedError(f"no systemd child of systemd-nspawn after {BOOT_TIMEOUT} s")
    box = Container(root=root, nspawn=proc, leader=leader, binds=binds)
    # systemctl fails until the container's D-Bus/private socket is up: poll, then --wait
    state = ""
    while time.monotonic() < deadline:
        res = box.run("systemctl", "is-system-running", "--wait", check=False, timeout=BOOT_TIMEOUT)
        state = res.stdout.strip()
        if state in ("running", "degraded"):
            return box
        if proc.poll() is not None:
            break
        time.sleep(0.1)  # polling systemd's state with a deadline
    shutdown(box)
    raise BedError(f"container systemd did not reach running (last state {state!r})")


def shutdown(box: Container) -> None:
    """Power the container off; kill nspawn if it does not stop in time."""
    with contextlib.suppress(Exception):
        box.run("systemctl", "poweroff", "--no-block", check=False, timeout=10)
    try:
        box.nspawn.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(box.nspawn.pid, signal.SIGKILL)
        box.nspawn.wait(timeout=10)


def _bed_unavailable(reason: str) -> None:
    """Skip with the reason, except in CI where the bed must run (fail instead)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"nspawn bed cannot run in CI: {reason}")
    pytest.skip(f"nspawn bed unavailable: {reason}")


@pytest.fixture(scope="session")
def nspawn_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cached rootfs tarball, built on first use (about a minute, once)."""
    reason = missing_requirements()
    if reason:
        _bed_unavailable(reason)
    log = tmp_path_factory.mktemp("debootstrap") / "debootstrap.log"
    try:
        return build_rootfs_tarball(log)
    except (BedError, subprocess.SubprocessError, OSError) as exc:
        _bed_unavailable(str(exc))
        raise


def project_binds() -> list[str]:
    """Bind the work tree read-only at /opt/wgsyncd-src (until the .deb exists)."""
    return [f"{REPO}:/opt/wgsyncd-src"]


@pytest.fixture(scope="session")
def booted_container(nspawn_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """One booted systemd container for the whole run, shared by every nspawn test."""
    workdir = tmp_path_factory.mktemp("nspawn")
    try:
        box = boot(nspawn_rootfs, project_binds(), workdir)
    except (BedError, subprocess.SubprocessError, OSError) as exc:
        _bed_unavailable(str(exc))
        raise
    try:
        yield box
    finally:
        shutdown(box)
        shutil.rmtree(workdir / "rootfs", ignore_errors=True)  # ~300 MB per run otherwise
