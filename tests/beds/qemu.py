"""Test bed: a real Linux kernel with the WireGuard module, booted under qemu (TESTBEDS.md section 2).

These machines have no WireGuard module, so the netlink reader can only meet a real
kernel inside a VM. The bed builds a small initramfs from packages already on this
machine (Debian's kernel modules, busybox, iproute2, wireguard-tools, Debian's
python3.11 and stdlib, BOTH pyroute2 versions), boots it ONCE with software
emulation (KVM does not work here) and collects the machine-readable result lines
the in-VM job writes to a second serial port.

Two archives make the initrd:
- the *base* (everything from packages) is cached under .cache/ keyed by the kernel
  version, the package versions and the builder's file list, so a second run skips it;
- the *job* (wgsyncd's code and tests/kernel_vm) is rebuilt every run and appended,
  so the code under test is never stale.

Outside root, or without qemu / a kernel with wireguard.ko, the fixture skips with
the reason; with CI=true it FAILS, so CI cannot go green by skipping the kernel tier.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import lzma
import os
import py_compile
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.kernel_vm import cases

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO / ".cache"
JOB_SRC = REPO / "tests" / "kernel_vm"
RESULT_PREFIX = cases.RESULT_PREFIX
DONE_PREFIX = cases.DONE_PREFIX
# The VM must be done well inside CI's 10 minutes; override for a slower machine.
BOOT_TIMEOUT = float(os.environ.get("WGSYNCD_VM_TIMEOUT", "480"))
QEMU = "qemu-system-x86_64"
BUSYBOX = "/bin/busybox"
PYTHON = "/usr/bin/python3.11"  # Debian's, with Debian's stdlib: what a host runs
PY_STDLIB = Path("/usr/lib/python3.11")
DEBIAN_PYROUTE2 = Path("/usr/lib/python3/dist-packages/pyroute2")
# PyNaCl (wgsyncd.state derives public keys with it) and its cffi backend, Debian's:
# copied into the VM's stdlib dir, where `python3.11 -S` finds them without site-packages.
DEBIAN_NACL = (
    Path("/usr/lib/python3/dist-packages/nacl"),
    Path("/usr/lib/python3/dist-packages/_cffi_backend"),
)
BINARIES = ("/usr/bin/ip", "/usr/bin/wg", PYTHON)
# Modules beyond wireguard's chain: veth joins the two namespaces of the live pair.
MODULES = ("wireguard", "veth")
# Stdlib parts nobody in the VM imports; dropping them keeps the initrd small.
STDLIB_SKIP = {
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "config-3.11-x86_64-linux-gnu",
    "distutils",
    "venv",
    "curses",
    "dbm",
}
# Bump when the layout of the base archive changes (part of the cache key).
BASE_LAYOUT_VERSION = "4"
DPKG_PACKAGES = ("busybox-static", "iproute2", "wireguard-tools", "python3.11", "libpython3.11-stdlib")


class BedError(RuntimeError):
    """The VM could not be built or booted; the message says which step."""


# ---------------------------------------------------------------- inputs


def pypi_pyroute2() -> Path | None:
    """The venv's pyroute2 (PyPI's current), found through the running interpreter."""
    try:
        import pyroute2
    except ImportError:
        return None
    path = Path(pyroute2.__file__).parent
    return None if path == DEBIAN_PYROUTE2 else path


def pyroute2_labels() -> list[str]:
    """Which pyroute2 versions the VM will test ("debian", "pypi"), known before any build.

    Cheap, so pytest can parametrize at collection time.
    """
    labels = ["debian"] if DEBIAN_PYROUTE2.is_dir() else []
    return labels + (["pypi"] if pypi_pyroute2() is not None else [])


def _kernel_has_wireguard(version: str) -> bool:
    """True when the kernel ships wireguard as a module or builtin."""
    mods = Path("/lib/modules") / version
    if not mods.is_dir():
        return False
    builtin = mods / "modules.builtin"
    if builtin.is_file() and "wireguard.ko" in builtin.read_text():
        return True
    return any(mods.glob("kernel/drivers/net/wireguard/wireguard.ko*"))


def find_kernel() -> tuple[str, Path] | None:
    """Pick the kernel to boot: $WGSYNCD_VM_KERNEL, else the newest non-RT one with WireGuard.

    Debian's linux-image-amd64 is the one production hosts run; the RT flavour is
    only a fallback because its scheduling makes emulation slower still.
    """
    wanted = os.environ.get("WGSYNCD_VM_KERNEL")
    found = []
    for vmlinuz in Path("/boot").glob("vmlinuz-*"):
        version = vmlinuz.name.removeprefix("vmlinuz-")
        if wanted and version != wanted:
            continue
        if _kernel_has_wireguard(version):
            found.append((("-rt-" in version), _version_tuple(version), version, vmlinuz))
    if not found:
        return None
    found.sort(key=lambda t: (not t[0], t[1]))
    _, _, version, vmlinuz = found[-1]
    return version, vmlinuz


def _version_tuple(version: str) -> tuple[int, ...]:
    """'6.1.0-56-amd64' -> (6, 1, 0, 56): orders kernel versions numerically."""
    return tuple(int(n) for n in re.findall(r"\d+", version))


def missing_requirements() -> str | None:
    """Why this bed cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (reads /boot/vmlinuz-*, builds an initramfs with root-owned files)"
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (apt-get install qemu-system-x86)"
    if shutil.which("zstd") is None:
        return "zstd is not installed (apt-get install zstd)"
    if shutil.which("modprobe") is None:
        return "modprobe is not installed (apt-get install kmod)"
    if not Path(BUSYBOX).is_file():
        return "busybox is not installed (apt-get install busybox-static)"
    for binary in BINARIES:
        if not Path(binary).is_file():
            return f"{binary} is missing (apt-get install iproute2 wireguard-tools python3.11)"
    if not (PY_STDLIB / "os.py").is_file():
        return f"{PY_STDLIB} is missing (apt-get install libpython3.11-stdlib)"
    if find_kernel() is None:
        return "no /boot/vmlinuz-* with a WireGuard module (apt-get install linux-image-amd64)"
    if not DEBIAN_PYROUTE2.is_dir() and pypi_pyroute2() is None:
        return "no pyroute2 at all (apt-get install python3-pyroute2)"
    if not nacl_files():
        return "Debian's PyNaCl is missing (apt-get install python3-nacl)"
    return None


def _run(argv: list[str], what: str, timeout: float = 120.0) -> str:
    """Run a build step; a failure raises BedError naming the step and its stderr."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BedError(f"{what}: {exc}") from None
    if proc.returncode != 0:
        raise BedError(f"{what}: exit {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return proc.stdout


def module_chain(kernel: str) -> list[Path]:
    """Module files to insmod, in dependency order, for every module in MODULES.

    ``modprobe --show-depends`` prints one ``insmod PATH`` per module, deepest
    first; builtin modules print ``builtin NAME`` and need nothing.
    """
    chain: list[Path] = []
    for module in MODULES:
        out = _run(["modprobe", "-S", kernel, "--show-depends", module], f"modprobe --show-depends {module}")
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "insmod" and Path(parts[1]) not in chain:
                chain.append(Path(parts[1]))
    return chain


def shared_libraries(files: Iterable[Path]) -> list[Path]:
    """Every library ``ldd`` names for ``files`` (as the path the loader will look for)."""
    libs: set[Path] = set()
    for path in files:
        proc = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False)
        for line in proc.stdout.splitlines():
            m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if m:
                libs.add(Path(m.group(1)))
    return sorted(libs)


def dpkg_versions(packages: Iterable[str]) -> dict[str, str]:
    """Installed versions, for the cache key and the results (a missing package is '-')."""
    out = {}
    for pkg in packages:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, check=False
        )
        out[pkg] = proc.stdout.strip() if proc.returncode == 0 else "-"
    return out


def _pyroute2_version(tree: Path) -> str:
    """Version of a pyroute2 tree from its dist-info next to it (Debian's says 'unknown' itself)."""
    for info in tree.parent.glob("pyroute2-*.dist-info"):
        return info.name.removeprefix("pyroute2-").removesuffix(".dist-info")
    return "unknown"


@dataclass
class BaseInputs:
    """Everything the base archive is made of; its digest is the cache key."""

    kernel: str
    vmlinuz: Path
    modules: list[Path]
    libs: list[Path]
    pyroute2: dict[str, tuple[Path, str]]  # label -> (tree, version)
    packages: dict[str, str]

    def key(self) -> str:
        """Digest of versions and file list: changes when any input changes."""
        parts = [BASE_LAYOUT_VERSION, self.kernel, str(self.vmlinuz)]
        parts += [str(p) for p in self.modules + self.libs]
        parts += [f"{k}={v}" for k, v in sorted(self.packages.items())]
        parts += [f"{k}={t}={v}" for k, (t, v) in sorted(self.pyroute2.items())]
        parts.append(Path(__file__).read_text())  # the builder itself
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def nacl_files() -> list[Path]:
    """Debian's PyNaCl tree and cffi backend module (empty when python3-nacl is missing)."""
    tree, backend = DEBIAN_NACL
    if not tree.is_dir():
        return []
    return [tree, *sorted(tree.glob("*.so")), *sorted(backend.parent.glob(f"{backend.name}.*.so"))]


def gather_inputs() -> BaseInputs:
    """Find the kernel, its module chain, the libraries and both pyroute2 trees."""
    found = find_kernel()
    if found is None:
        raise BedError("no kernel with WireGuard under /boot")
    kernel, vmlinuz = found
    dynload = sorted((PY_STDLIB / "lib-dynload").glob("*.so"))
    pyroute2: dict[str, tuple[Path, str]] = {}
    if DEBIAN_PYROUTE2.is_dir():
        pyroute2["debian"] = (DEBIAN_PYROUTE2, _pyroute2_version(DEBIAN_PYROUTE2))
    pypi = pypi_pyroute2()
    if pypi is not None:
        pyroute2["pypi"] = (pypi, _pyroute2_version(pypi))
    packages = dpkg_versions(
        (*DPKG_PACKAGES, f"linux-image-{kernel}", "python3-pyroute2", "python3-nacl", "python3-cffi-backend")
    )
    return BaseInputs(
        kernel=kernel,
        vmlinuz=vmlinuz,
        modules=module_chain(kernel),
        libs=shared_libraries(
            [Path(b) for b in BINARIES] + dynload + [p for p in nacl_files() if p.is_file()]
        ),
        pyroute2=pyroute2,
        packages=packages,
    )


# ---------------------------------------------------------------- cpio (newc) writer


class CpioWriter:
    """A minimal newc archive writer: what the kernel's initramfs unpacker reads.

    Written here rather than staged on disk for ``cpio``: no temp tree to clean up,
    every entry owned by root, and file mtimes kept exactly (the .pyc files check
    them, and a mismatch makes Python recompile the stdlib in the slow VM).
    """

    def __init__(self, out) -> None:
        self._out = out
        self._ino = 1
        self._dirs: set[str] = {"", "."}

    def _entry(self, name: str, mode: int, data: bytes, mtime: int = 0) -> None:
        """Write one header + name + data, each padded to 4 bytes."""
        name_b = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, mtime, len(data), 0, 0, 0, 0, len(name_b), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._ino += 1
        self._out.write(header + name_b)
        self._out.write(b"\0" * (-(110 + len(name_b)) % 4))
        self._out.write(data)
        self._out.write(b"\0" * (-len(data) % 4))

    def mkdir(self, name: str) -> None:
        """Add a directory (and its parents) once."""
        name = name.strip("/")
        if name in self._dirs:
            return
        self.mkdir(os.path.dirname(name))
        self._dirs.add(name)
        self._entry(name, 0o040755, b"")

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644, mtime: int = 0) -> None:
        """Add a regular file from memory."""
        name = name.strip("/")
        self.mkdir(os.path.dirname(name))
        self._entry(name, 0o100000 | mode, data, mtime)

    def add_file(self, name: str, src: Path) -> None:
        """Add a regular file from disk (symlinks followed), keeping mode bits and mtime."""
        st = src.stat()
        self.add_bytes(name, src.read_bytes(), st.st_mode & 0o7777, int(st.st_mtime))

    def symlink(self, name: str, target: str) -> None:
        """Add a symlink."""
        name = name.strip("/")
        self.mkdir(os.path.dirname(name))
        self._entry(name, 0o120777, target.encode())

    def add_tree(self, dest: str, src: Path, skip: set[str] = frozenset()) -> None:
        """Add a directory tree; skips names in ``skip``, dangling links and optimised .pyc files."""
        for root, dirs, files in os.walk(src):
            dirs[:] = sorted(d for d in dirs if d not in skip)
            rel = os.path.relpath(root, src)
            self.mkdir(os.path.normpath(os.path.join(dest, rel)))
            for fname in sorted(files):
                path = Path(root) / fname
                if fname in skip or ".opt-" in fname or not path.exists():
                    continue
                self.add_file(os.path.normpath(os.path.join(dest, rel, fname)), path)

    def close(self) -> None:
        """Write the trailer entry that ends the archive."""
        self._entry("TRAILER!!!", 0, b"")


# ---------------------------------------------------------------- base archive

INIT_SCRIPT = r"""#!/bin/busybox sh
# PID 1 of the wgsyncd kernel VM: mount, load WireGuard, run the job, power off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
for m in $(cat /etc/wgsyncd-vm/modules); do
    insmod "$m" || echo "WGSYNCD-INIT insmod failed: $m"
done
/usr/bin/ip link set lo up
if [ -x /job/run.sh ]; then
    /job/run.sh
else
    echo "WGSYNCD-INIT no job in the initrd" > /dev/ttyS1
fi
sync
poweroff -f
"""


def module_bytes(path: Path) -> tuple[str, bytes]:
    """A module file as plain ``.ko`` (newer Debian kernels ship .ko.xz, busybox insmod wants it raw)."""
    data = path.read_bytes()
    name = str(path)
    if name.endswith(".xz"):
        return name[:-3], lzma.decompress(data)
    if name.endswith(".gz"):
        return name[:-3], gzip.decompress(data)
    if name.endswith(".zst"):
        raw = subprocess.run(["zstd", "-dc", name], capture_output=True, check=False)
        if raw.returncode != 0:
            raise BedError(f"zstd -d {name}: {raw.stderr.decode(errors='replace').strip()}")
        return name[:-4], raw.stdout
    return name, data


def base_archive_path(inputs: BaseInputs) -> Path:
    """Where the cached base archive lives (gitignored; CI may cache .cache/)."""
    return CACHE_DIR / f"kernel-vm-base-{inputs.kernel}-{inputs.key()}.cpio.zst"


def _write_base(cpio: CpioWriter, inputs: BaseInputs) -> None:
    """Put busybox, iproute2, wg, python3.11 + stdlib + libs, modules, pyroute2 and /init in."""
    for d in ("proc", "sys", "dev", "tmp", "run", "root", "etc", "var"):
        cpio.mkdir(d)
    cpio.symlink("var/run", "/run")
    cpio.add_file("bin/busybox", Path(BUSYBOX))
    applets = _run([BUSYBOX, "--list"], "busybox --list").split()
    for applet in applets:
        # busybox's own ip would shadow iproute2 (TESTBEDS pitfall): never link it
        if applet not in ("ip", "busybox", "wg", "python3", "modprobe"):
            cpio.symlink(f"bin/{applet}", "busybox")
    for binary in BINARIES:
        cpio.add_file(binary, Path(binary))
    for lib in inputs.libs:
        cpio.add_file(str(lib), lib)
    cpio.add_tree(str(PY_STDLIB), PY_STDLIB, STDLIB_SKIP)
    order = []
    for module in inputs.modules:
        dest, data = module_bytes(module)
        cpio.add_bytes(dest, data)
        order.append(dest)
    cpio.add_bytes("etc/wgsyncd-vm/modules", ("\n".join(order) + "\n").encode())
    for path in nacl_files():
        if path.is_dir():
            cpio.add_tree(f"{PY_STDLIB}/{path.name}", path)
        elif path.parent != DEBIAN_NACL[0]:
            cpio.add_file(f"{PY_STDLIB}/{path.name}", path)
    for label, (tree, version) in inputs.pyroute2.items():
        cpio.add_tree(f"opt/pyroute2-{label}/pyroute2", tree)
        # 0.7.x builds its public names (IPRoute, WireGuard) from entry points in dist-info
        info = tree.parent / f"pyroute2-{version}.dist-info"
        if info.is_dir():
            cpio.add_tree(f"opt/pyroute2-{label}/{info.name}", info)
    manifest = {
        "kernel": inputs.kernel,
        "packages": inputs.packages,
        "pyroute2": {label: version for label, (_, version) in inputs.pyroute2.items()},
        "key": inputs.key(),
    }
    cpio.add_bytes("etc/wgsyncd-vm/manifest.json", json.dumps(manifest, indent=1).encode())
    cpio.add_bytes("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    cpio.add_bytes("etc/group", b"root:x:0:\n")
    cpio.add_bytes("init", INIT_SCRIPT.encode(), 0o755)


def build_base(inputs: BaseInputs) -> Path:
    """Build (or reuse) the zstd-compressed base archive; written to a temp name, then renamed."""
    target = base_archive_path(inputs)
    if target.is_file():
        return target
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for stale in CACHE_DIR.glob(f"kernel-vm-base-{inputs.kernel}-*.cpio.zst"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=CACHE_DIR, prefix=".kernel-vm-base-", suffix=".cpio")
    try:
        with os.fdopen(fd, "wb") as out:
            cpio = CpioWriter(out)
            _write_base(cpio, inputs)
            cpio.close()
        _run(["zstd", "-q", "-f", "-T0", "-3", "--rm", tmp, "-o", tmp + ".zst"], "zstd base archive")
        os.replace(tmp + ".zst", target)
    finally:
        for leftover in (tmp, tmp + ".zst"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    return target


# ---------------------------------------------------------------- job archive


def _add_package(cpio: CpioWriter, dest: str, src: Path, workdir: Path) -> None:
    """Add a Python package with .pyc compiled on the host (the VM compiles ~18x slower)."""
    for path in sorted(src.rglob("*")):
        if "__pycache__" in path.parts or path.is_dir():
            continue
        rel = path.relative_to(src)
        cpio.add_file(f"{dest}/{rel}", path)
        if path.suffix == ".py":
            pyc = workdir / "pyc" / rel.with_suffix(".pyc")
            pyc.parent.mkdir(parents=True, exist_ok=True)
            py_compile.compile(str(path), cfile=str(pyc), dfile=f"/{dest}/{rel}", doraise=True)
            tag = f"{path.stem}.cpython-311.pyc"
            cpio.add_file(f"{dest}/{rel.parent}/__pycache__/{tag}", pyc)


RUN_SCRIPT = JOB_SRC / "run.sh"  # the job's entry point, /job/run.sh in the VM


def build_job(workdir: Path) -> Path:
    """The job archive: wgsyncd, tests/kernel_vm and /job/run.sh; rebuilt every run."""
    path = workdir / "job.cpio"
    with path.open("wb") as out:
        cpio = CpioWriter(out)
        _add_package(cpio, "job/wgsyncd", REPO / "wgsyncd", workdir)
        _add_package(cpio, "job/kernel_vm", JOB_SRC, workdir)
        cpio.add_bytes("job/run.sh", RUN_SCRIPT.read_bytes(), 0o755)
        cpio.close()
    return path


# ---------------------------------------------------------------- boot


@dataclass
class VmRun:
    """One boot: its results by id, the DONE summary, the console and timings."""

    results: dict[str, dict] = field(default_factory=dict)
    done: dict | None = None
    console: str = ""
    raw: str = ""
    build_seconds: float = 0.0
    boot_seconds: float = 0.0
    base_cached: bool = False
    base_size: int = 0
    manifest: dict = field(default_factory=dict)
    error: str | None = None  # why the run is unusable (timeout, crash)

    def console_tail(self, lines: int = 40) -> str:
        """The end of the console, for a failure message."""
        return "\n".join(self.console.splitlines()[-lines:])


def parse_results(text: str) -> tuple[dict[str, dict], dict | None, list[str]]:
    """Turn result lines into {id: result}, the DONE summary and unparseable lines.

    Serial output may carry CR and stray bytes; a line that is not a complete JSON
    object is reported, never guessed at, so a truncated run cannot pass.
    """
    results: dict[str, dict] = {}
    done = None
    bad: list[str] = []
    for line in text.replace("\r", "").splitlines():
        for prefix in (RESULT_PREFIX, DONE_PREFIX):
            idx = line.find(prefix)
            if idx < 0:
                continue
            try:
                obj = json.loads(line[idx + len(prefix) :])
            except ValueError:
                bad.append(line[:200])
                break
            if prefix == DONE_PREFIX:
                done = obj
            else:
                results[obj["id"]] = obj
            break
        else:
            if line.startswith("WGSYNCD-"):
                bad.append(line[:200])
    return results, done, bad


def qemu_argv(vmlinuz: Path, initrd: Path, console: Path, results: Path) -> list[str]:
    """The qemu command line: TCG, no devices but two serial ports (console, results)."""
    return [
        QEMU,
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "1G",
        "-smp",
        "2",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        f"file:{console}",
        "-serial",
        f"file:{results}",
        "-kernel",
        str(vmlinuz),
        "-initrd",
        str(initrd),
        "-append",
        "console=ttyS0 panic=-1 quiet",
    ]


def boot(inputs: BaseInputs, base: Path, job: Path, workdir: Path, timeout: float = BOOT_TIMEOUT) -> VmRun:
    """Boot once and wait for power-off (or kill qemu at the deadline); parse what came back."""
    initrd = workdir / "initrd"
    with initrd.open("wb") as out:
        data = base.read_bytes()
        # the kernel only finds the next archive at a 4-byte-aligned offset; zeros are skipped
        out.write(data + b"\0" * (-len(data) % 512))
        out.write(job.read_bytes())
    console, results = workdir / "console.log", workdir / "results.log"
    run = VmRun()
    start = time.monotonic()
    proc = subprocess.Popen(
        qemu_argv(inputs.vmlinuz, initrd, console, results),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        qemu_out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        qemu_out, _ = proc.communicate()
        run.error = f"qemu did not power off within {timeout:.0f}s (killed)"
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C): never leave our qemu behind
            proc.kill()
            proc.wait()
    run.boot_seconds = time.monotonic() - start
    if proc.returncode not in (0, None) and run.error is None:
        run.error = f"qemu exited {proc.returncode}: {qemu_out.decode(errors='replace')[-500:]}"
    run.console = console.read_text(errors="replace") if console.exists() else ""
    run.raw = results.read_text(errors="replace") if results.exists() else ""
    run.results, run.done, bad = parse_results(run.raw)
    if bad and run.error is None:
        run.error = f"unparseable result lines: {bad[:3]}"
    if run.done is None and run.error is None:
        run.error = "the VM job never reported DONE (crashed or was cut short)"
    return run


def run_vm(workdir: Path, timeout: float = BOOT_TIMEOUT) -> VmRun:
    """Build (or reuse) the base, build the job, boot once: the whole bed in one call."""
    t0 = time.monotonic()
    inputs = gather_inputs()
    cached = base_archive_path(inputs).is_file()
    base = build_base(inputs)
    job = build_job(workdir)
    build_seconds = time.monotonic() - t0
    run = boot(inputs, base, job, workdir, timeout)
    run.build_seconds = build_seconds
    run.base_cached = cached
    run.base_size = base.stat().st_size
    run.manifest = {
        "kernel": inputs.kernel,
        "pyroute2": {k: v for k, (_, v) in inputs.pyroute2.items()},
        "packages": inputs.packages,
    }
    return run


# ---------------------------------------------------------------- fixture


def _unavailable(reason: str) -> None:
    """Skip with the reason, or fail loudly in CI (a skipped kernel tier is no proof)."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"kernel VM bed unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def boot_session(tmp_path_factory: pytest.TempPathFactory) -> VmRun:
    """Build and boot once; skips (or fails in CI) with the reason when the bed cannot run."""
    reason = missing_requirements()
    if reason:
        _unavailable(reason)
    workdir = tmp_path_factory.mktemp("kernel-vm")
    try:
        run = run_vm(workdir)
    except BedError as exc:
        _unavailable(f"could not build the kernel VM: {exc}")
    print(
        f"\nkernel VM: build {run.build_seconds:.1f}s (base cached: {run.base_cached}, "
        f"{run.base_size / 1e6:.1f} MB), boot+job {run.boot_seconds:.1f}s, {len(run.results)} results "
        f"(console and raw results in {workdir})"
    )
    return run


@pytest.fixture(scope="session")
def kernel_vm(tmp_path_factory: pytest.TempPathFactory) -> VmRun:
    """Boot the kernel VM once per session and hand every test the collected results."""
    return boot_session(tmp_path_factory)
