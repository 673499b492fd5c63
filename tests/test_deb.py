"""The .deb: built once per session, lintian-clean, and installed on a clean Debian 12.

The install test boots a CLEAN bookworm (minbase + systemd only, none of wgsyncd's
dependencies) under real systemd with the nspawn bed's ``boot``, lets apt pull the
dependencies from Debian's archive, and then runs the package the way an operator
would: ``wgsyncd --version``, ``wgsyncd collect`` against a real wireguard-go
interface and a conf file (read through the vendored wgconfig), ``systemctl start
wgsyncd`` syncing into a PostgreSQL on the host, then ``apt-get remove`` and
``purge`` leaving nothing behind.

``build_deb`` and ``debootstrap_tarball`` are shared with tests/test_container.py.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.beds import nspawn
from tests.beds.postgres import PgCluster
from tests.beds.wireguard import WgBed, WgIface, missing_reason

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DIST = REPO / "dist"
CACHE = REPO / ".cache"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# a clean Debian 12 with systemd as PID 1 and nothing of wgsyncd's dependencies
CLEAN_SYSTEMD = ("systemd", "systemd-sysv", "dbus")
# Depends must be bookworm archive packages, nothing else: a new pyproject dependency
# has to be added here on purpose (and to debian/py3dist-overrides), after checking
# that bookworm has it at the version pyproject asks for.
EXPECTED_DEPENDS = {
    "python3-click",
    "python3-nacl",  # pynacl (secrets.py), bookworm 1.5.0
    "python3-psycopg",
    "python3-pyroute2",
    "python3-requests",
    "python3-sdnotify",
    "python3:any",
    "procps",  # /bin/kill for ExecReload; not in a minbase+systemd host
}
APT = ("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q")
UNITS = (
    "wgsyncd.service",
    "wgsyncd-sync.service",
    "wgsyncd-sync.timer",
    "wgsyncd-sync.path",
    "wgsyncd-persist.service",
    "wgsyncd-reap.service",
    "wgsyncd-reap.timer",
)


class DebBuildError(RuntimeError):
    """The package could not be built; the message carries the tail of the build log."""


def unavailable(reason: str) -> None:
    """Skip with the reason, except in CI (CI=true), where a bed that cannot be built fails."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"cannot run in CI: {reason}")
    pytest.skip(reason)


def build_missing() -> str | None:
    """Why the .deb cannot be built here (tools missing), or None."""
    for tool, pkg in (
        ("dpkg-buildpackage", "dpkg-dev"),
        ("dh", "debhelper"),
        ("dh_python3", "dh-python"),
        ("lintian", "lintian"),
        ("git", "git"),
    ):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"{tool} is not installed (apt-get install {pkg})"
    if not Path("/usr/share/perl5/Debian/Debhelper/Dh_Lib.pm").exists():
        return "debhelper is not installed"
    return None


@functools.cache
def build_deb() -> Path:
    """Build dist/wgsyncd_<version>_all.deb with `make deb`'s script, once per process.

    Cached here rather than in a fixture so the install test and the container test
    (two modules) share one build. WGS_TEST_DEB=path uses an already built
    package instead (e.g. the artefact of an earlier CI step).
    """
    prebuilt = os.environ.get("WGS_TEST_DEB")
    if prebuilt:
        if not Path(prebuilt).is_file():
            raise DebBuildError(f"WGS_TEST_DEB={prebuilt}: no such file")
        return Path(prebuilt).resolve()
    proc = subprocess.run(
        [str(REPO / "debian/build-deb.sh"), str(DIST)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise DebBuildError(f"debian/build-deb.sh exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    deb = Path(proc.stdout.strip().splitlines()[-1])
    if not deb.is_file():
        raise DebBuildError(f"debian/build-deb.sh printed {deb}, which does not exist")
    return deb


@pytest.fixture(scope="session")
def deb_path() -> Path:
    """The built package (skips/fails when the packaging tools are missing)."""
    reason = build_missing()
    if reason:
        unavailable(reason)
    return build_deb()


def debootstrap_tarball(name: str, include: tuple[str, ...], prepare=None) -> Path:
    """A debootstrapped bookworm minbase (+ ``include``), packed and cached under .cache/.

    Keyed by the package list, built in a temporary dir and renamed into place, so an
    interrupted build never leaves a tarball later runs would trust. ``prepare(root)``
    may adjust the tree before it is packed.
    """
    key = hashlib.sha256("\n".join((SUITE, MIRROR, name, *include)).encode()).hexdigest()[:12]
    target = CACHE / f"{name}-{SUITE}-{key}.tar"
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=CACHE))
    try:
        root = work / "rootfs"
        cmd = ["debootstrap", "--variant=minbase"]
        if include:
            cmd.append(f"--include={','.join(include)}")
        proc = subprocess.run(
            [*cmd, SUITE, str(root), MIRROR], capture_output=True, text=True, timeout=900, check=False
        )
        if proc.returncode != 0:
            raise nspawn.BedError(f"debootstrap {name} failed ({proc.returncode}): {proc.stdout[-1500:]}")
        use_host_apt_sources(root)
        if prepare:
            prepare(root)
        return nspawn.pack_rootfs(root, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def use_host_apt_sources(root: Path) -> None:
    """Give the rootfs the host's Debian sources (incl. updates/security), nothing third-party.

    Only files apt would read (*.list, *.sources) and only those naming a Debian
    archive, so a host's extra repositories (with keys the rootfs lacks) stay out.
    """
    host = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    picked = [
        p
        for p in host
        if p.is_file() and p.suffix in (".list", ".sources") and "debian.org/debian" in p.read_text()
    ]
    if not picked:
        return  # keep debootstrap's own sources.list
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    for p in picked:
        dest = root / "etc/apt" / p.relative_to("/etc/apt")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dest)


def clean_rootfs(root: Path) -> None:
    """machine-id and the nspawn bed's quiet-boot tweaks (no gettys, no apt timers)."""
    subprocess.run(["systemd-machine-id-setup", f"--root={root}"], check=True, capture_output=True)
    nspawn._prepare_rootfs(root)


# nsenter passes our whole environment into the container (CI=, WGSYNCD_*...):
# every command there runs with a clean one, like an operator's shell would.
CLEAN_ENV = ("env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")


def crun(box: nspawn.Container, *args: str, **kw) -> subprocess.CompletedProcess:
    """Run a command in the container with a clean environment."""
    return box.run(*CLEAN_ENV, *args, **kw)


def csh(box: nspawn.Container, script: str, **kw) -> subprocess.CompletedProcess:
    """Run a shell snippet in the container with a clean environment."""
    return crun(box, "/bin/sh", "-c", script, **kw)


@dataclass
class Installed:
    """A booted clean bookworm with the .deb installed, and what the test gave it."""

    box: nspawn.Container
    iface: WgIface
    cluster: PgCluster
    dbname: str
    host_id: str
    install_log: str
    files: list[str]  # `dpkg -L wgsyncd` right after install
    conf_mode: str  # "640 root:root" as installed, before the test wrote its own config
    deb_name: str  # the package file, under /dist in the container


def _config(iface: WgIface, dsn: str, host_id: str) -> str:
    """The operator's /etc/wgsyncd/wgsyncd.toml for the test: our interface only, no wgrest."""
    return (
        f'host_id = "{host_id}"\n'
        f'interfaces = ["{iface.name}"]\n'
        "[database]\n"
        f'dsn = "{dsn}"\n'
        "connect_timeout = 5.0\n"
        "auto_migrate = true\n"  # the test's DSN is the schema owner
        "[kernel]\n"
        'backend = "uapi"\n'
        "[wgrest]\n"
        "enabled = false\n"
        "[daemon]\n"
        "interval = 2.0\n"
        "jitter = 0.0\n"
    )


@pytest.fixture(scope="module")
def installed(deb_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """Boot the clean bookworm, `apt-get install ./wgsyncd_*.deb`, configure it; tear all down."""
    reason = nspawn.missing_requirements() or missing_reason()
    if reason:
        unavailable(reason)
    try:
        tarball = debootstrap_tarball("clean-systemd", CLEAN_SYSTEMD, clean_rootfs)
    except (nspawn.BedError, subprocess.SubprocessError, OSError) as exc:
        unavailable(f"clean bookworm rootfs: {exc}")
        raise
    pg_base = tempfile.mkdtemp(prefix="wgs-debpg-", dir="/tmp")
    cluster = PgCluster.start(pg_base, tcp=True)
    bed = WgBed()
    box = None
    try:
        iface = bed.create(peers=3)
        dbname = "deb_" + uuid.uuid4().hex[:8]
        cluster.create_database(dbname)
        workdir = tmp_path_factory.mktemp("deb-nspawn")
        binds = [f"{deb_path.parent}:/dist", "rw:/run/wireguard:/run/wireguard"]
        try:
            box = nspawn.boot(tarball, binds, workdir)
        except (nspawn.BedError, subprocess.SubprocessError, OSError) as exc:
            unavailable(f"booting the clean bookworm: {exc}")
            raise
        crun(box, "apt-get", "update", "-q", timeout=300)
        res = crun(
            box,
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            f"/dist/{deb_path.name}",
            timeout=600,
        )
        files = crun(box, "dpkg", "-L", "wgsyncd").stdout.split()
        conf_mode = crun(box, "stat", "-c", "%a %U:%G", "/etc/wgsyncd/wgsyncd.toml").stdout.strip()
        host_id = f"deb-{uuid.uuid4().hex[:8]}"
        dsn = cluster.dsn(dbname, via_tcp=True)
        box.write("/etc/wgsyncd/wgsyncd.toml", _config(iface, dsn, host_id), mode=0o640)
        # the interface's own conf file: read through the vendored wgconfig
        box.write(f"/etc/wireguard/{iface.name}.conf", iface.showconf(), mode=0o600)
        yield Installed(
            box, iface, cluster, dbname, host_id, res.stdout + res.stderr, files, conf_mode, deb_path.name
        )
    finally:
        if box is not None:
            nspawn.shutdown(box)
        bed.close()
        cluster.stop("immediate")
        shutil.rmtree(pg_base, ignore_errors=True)


def _control_field(deb: Path, name: str) -> str:
    """One field of the package's control file."""
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_lintian_has_no_errors_or_warnings(deb_path: Path) -> None:
    """Acceptance: lintian on the .deb reports no E: and no W: (overrides carry a reason)."""
    proc = subprocess.run(
        ["lintian", "--pedantic", str(deb_path)], capture_output=True, text=True, timeout=300, check=False
    )
    bad = [line for line in proc.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert not bad, "\n".join(bad)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_depends_only_on_bookworm_packages(deb_path: Path) -> None:
    """Depends names exactly Debian's libraries + python3; wgconfig is inside, not a Depends."""
    depends = {d.split("(")[0].strip() for d in _control_field(deb_path, "Depends").split(",")}
    assert depends == EXPECTED_DEPENDS
    assert "wireguard-tools" in _control_field(deb_path, "Recommends")


def test_package_contents(deb_path: Path, tmp_path: Path) -> None:
    """Conffile 0640, vendored wgconfig + its licence, man page, completion, units."""
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(deb_path)], capture_output=True, text=True, check=True
    ).stdout
    modes = {line.split()[-1].lstrip("."): line.split()[0] for line in listing.splitlines()}
    assert modes["/etc/wgsyncd/wgsyncd.toml"] == "-rw-r-----"
    for path in (
        "/usr/bin/wgsyncd",
        "/usr/lib/wgsyncd/vendor/wgconfig/__init__.py",
        "/usr/share/doc/wgsyncd/copyright",
        "/usr/share/man/man8/wgsyncd.8.gz",
        "/usr/share/bash-completion/completions/wgsyncd",
        *(f"/lib/systemd/system/{u}" for u in UNITS),
    ):
        assert path in modes, f"{path} missing from the package"
    assert any(p.startswith("/usr/share/doc/wgsyncd/wgconfig.LICENSE") for p in modes)
    assert not any("__pycache__" in p for p in modes)
    ctrl = tmp_path / "ctrl"
    subprocess.run(["dpkg-deb", "-e", str(deb_path), str(ctrl)], check=True)
    assert (ctrl / "conffiles").read_text().split() == ["/etc/wgsyncd/wgsyncd.toml"]
    # the private path is byte-compiled at install and cleaned at removal (no stray __pycache__)
    assert "py3compile -p wgsyncd /usr/lib/wgsyncd" in (ctrl / "postinst").read_text()
    assert "py3clean -p wgsyncd" in (ctrl / "prerm").read_text()
    subprocess.run(["dpkg-deb", "-x", str(deb_path), str(tmp_path / "root")], check=True)
    copyright_text = (tmp_path / "root/usr/share/doc/wgsyncd/copyright").read_text()
    assert "Files: debian/.vendor/wgconfig/*" in copyright_text
    assert "Dirk Henrici" in copyright_text and "GNU AFFERO GENERAL PUBLIC LICENSE" in copyright_text


def test_install_pulls_only_debian_packages(installed: Installed) -> None:
    """apt resolved every dependency from Debian (no pip anywhere) at bookworm's versions."""
    box = installed.box
    assert "python3-psycopg" in installed.install_log and "python3-pyroute2" in installed.install_log
    versions = dict(
        line.split("\t")
        for line in crun(
            box, "dpkg-query", "-W", "-f", "${Package}\t${Version}\n", "python3-psycopg", "python3-pyroute2"
        ).stdout.splitlines()
    )
    assert versions["python3-pyroute2"].startswith("0.7.2")
    assert versions["python3-psycopg"].startswith("3.1.")
    assert crun(box, "python3", "-c", "import pip", check=False).returncode != 0, "pip is installed"
    assert csh(box, "ls /usr/local/lib/python3*/dist-packages 2>/dev/null | wc -l").stdout.strip() == "0"
    where = crun(
        box, "python3", "-c", "import wgsyncd, wgconfig, pyroute2, psycopg; print(wgconfig.__file__)"
    ).stdout.strip()
    assert where == "/usr/lib/wgsyncd/vendor/wgconfig/__init__.py"
    assert installed.conf_mode == "640 root:root"


def test_bash_completion_completes_commands(installed: Installed) -> None:
    """The shipped completion (click's, generated at build time) completes subcommands."""
    script = (
        "source /usr/share/bash-completion/completions/wgsyncd; "
        "COMP_WORDS=(wgsyncd che); COMP_CWORD=1; _wgsyncd_completion wgsyncd che wgsyncd; "
        "echo ${COMPREPLY[@]}"
    )
    out = crun(installed.box, "bash", "-c", script).stdout.split()
    assert out == ["check-config"]


def test_version_and_collect(installed: Installed) -> None:
    """`wgsyncd --version` and `collect` work on Debian's pyroute2 0.7.2 / psycopg 3.1."""
    box, iface = installed.box, installed.iface
    assert crun(box, "wgsyncd", "--version").stdout.strip() == "wgsyncd, version 0.1.0"
    import json

    res = crun(box, "wgsyncd", "collect", "--json")
    state = json.loads(res.stdout)
    text = json.dumps(state)
    assert iface.name in text
    peers = [line.split("\t")[0] for line in iface.dump().splitlines()[1:]]
    assert len(peers) == 3
    for key in peers:
        assert key in text, "a peer of the interface is missing from collect"
    # both the running interface and its conf file (via the vendored wgconfig) were read
    assert "kernel" in text and "conf" in text
    assert "crashed" not in text, text[:2000]


def _db_peers(inst: Installed) -> dict[str, set[str]]:
    """Public key -> sources, for the live peers the database holds for the test interface."""
    import psycopg

    with psycopg.connect(inst.cluster.dsn(inst.dbname), connect_timeout=5) as conn:
        try:
            rows = conn.execute(
                "SELECT public_key, sources FROM peers"
                " WHERE host_id = %s AND interface = %s AND removed_at IS NULL",
                (inst.host_id, inst.iface.name),
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return set()
    return {r[0]: set(r[1]) for r in rows}


def test_service_syncs_into_postgres(installed: Installed) -> None:
    """Installed units are not enabled; once configured, `systemctl start wgsyncd` syncs."""
    box = installed.box
    for unit in ("wgsyncd.service", "wgsyncd-sync.timer", "wgsyncd-sync.path"):
        state = crun(box, "systemctl", "is-enabled", unit, check=False).stdout.strip()
        assert state == "disabled", f"{unit} is {state!r} right after install"
    assert box.unit_property("wgsyncd.service", "ActiveState") == "inactive"
    crun(box, "systemctl", "start", "wgsyncd.service", timeout=120)
    expected = {line.split("\t")[0] for line in installed.iface.dump().splitlines()[1:]}
    try:
        box.wait_for("the peers in PostgreSQL", lambda: set(_db_peers(installed)) == expected, timeout=60)
    except AssertionError:
        journal = crun(box, "journalctl", "-u", "wgsyncd", "--no-pager", "-n", "60", check=False).stdout
        raise AssertionError(f"peers never landed; journal:\n{journal}") from None
    # each peer seen by the running interface AND its conf file (read via the vendored wgconfig)
    assert all(src == {"kernel", "conf"} for src in _db_peers(installed).values()), _db_peers(installed)
    assert box.unit_property("wgsyncd.service", "ActiveState") == "active"
    assert box.unit_property("wgsyncd.service", "NRestarts") == "0"


def _dump_config(text: str) -> list[str]:
    """`wg show dump` lines without handshakes and counters, in key order."""
    lines = text.splitlines()
    return [lines[0], *sorted("\t".join(c[:4] + c[7:]) for c in (x.split("\t") for x in lines[1:]))]


def test_persist_unit_puts_back_runtime_peers_after_a_rebuild(installed: Installed) -> None:
    """[persist]: the daemon snapshots a runtime-only peer; after the interface is rebuilt from its
    conf, systemd's wgsyncd-persist.service puts it back (and the daemon waits for it)."""
    from tests.beds.wireguard import generated_peers

    box, iface = installed.box, installed.iface
    conf = f"/etc/wireguard/{iface.name}.conf"
    config_before = crun(box, "cat", "/etc/wgsyncd/wgsyncd.toml").stdout
    box.write("/etc/wgsyncd/wgsyncd.toml", config_before + "[persist]\nenabled = true\n", mode=0o640)
    try:
        spec = generated_peers(10)[-1]  # allowed IPs distinct from the 3 conf peers'
        iface.set_peer(spec.public_key, preshared_key=spec.preshared_key, allowed_ips=spec.allowed_ips)
        before = _dump_config(iface.dump())
        crun(box, "systemctl", "restart", "wgsyncd.service", timeout=120)
        snap = f"/var/lib/wgsyncd/persist/{iface.name}.json"
        box.wait_for(
            "the snapshot with the runtime peer",
            lambda: spec.public_key in crun(box, "cat", snap, check=False).stdout,
            timeout=60,
        )
        assert crun(box, "stat", "-c", "%a", snap).stdout.strip() == "600"
        crun(box, "systemctl", "stop", "wgsyncd.service", timeout=60)
        # the reboot: wireguard-go started again and configured from the conf file only
        iface._stop()
        iface._start()
        iface.setconf(crun(box, "cat", conf).stdout)
        assert spec.public_key not in iface.dump()
        res = crun(box, "systemctl", "start", "wgsyncd-persist.service", check=False, timeout=120)
        journal = crun(box, "journalctl", "-u", "wgsyncd-persist", "--no-pager", check=False).stdout
        assert res.returncode == 0, journal
        assert _dump_config(iface.dump()) == before
        assert f"put back peer {spec.public_key}" in journal
        deps = box.unit_property("wgsyncd.service", "After").split()
        assert "wgsyncd-persist.service" in deps
    finally:
        box.write("/etc/wgsyncd/wgsyncd.toml", config_before, mode=0o640)


def test_reload_works_on_a_clean_host(installed: Installed) -> None:
    """`systemctl reload` (ExecReload=/bin/kill) works on a minbase host: procps is pulled in."""
    box = installed.box
    crun(box, "systemctl", "start", "wgsyncd.service", timeout=120)
    res = crun(box, "systemctl", "reload", "wgsyncd.service", check=False, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    box.wait_for(
        "the daemon to log its reload",
        lambda: any(
            str(e.get("MESSAGE", "")).startswith("config reloaded from")
            for e in _journal(box, "wgsyncd.service")
        ),
        timeout=30,
    )
    assert box.unit_property("wgsyncd.service", "ActiveState") == "active"


def test_readme_debian_migrate_command_works(installed: Installed) -> None:
    """README.Debian's `systemd-run ... LoadCredential=... wgsyncd db migrate` runs as written."""
    box = installed.box
    box.write("/etc/credstore/wgsyncd.db-password", "unused-by-trust-auth", mode=0o600)
    try:
        text = crun(box, "cat", "/usr/share/doc/wgsyncd/README.Debian").stdout
        line = next(i for i, x in enumerate(text.splitlines()) if x.strip().startswith("systemd-run"))
        cmd = " ".join(text.splitlines()[line : line + 2]).replace("\\", " ")
        res = csh(box, cmd, check=False, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        crun(box, "rm", "-f", "/etc/credstore/wgsyncd.db-password")


def _journal(box: nspawn.Container, unit: str) -> list[dict]:
    """The unit's journal entries in the container, as JSON objects."""
    out = crun(box, "journalctl", "-u", unit, "-o", "json", "--no-pager", check=False).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_reinstall_keeps_config_and_running_service(installed: Installed) -> None:
    """An upgrade/reinstall keeps the operator's config (no conffile prompt) and service state."""
    box = installed.box
    crun(box, "systemctl", "enable", "--now", "wgsyncd.service", timeout=120)
    before = crun(box, "cat", "/etc/wgsyncd/wgsyncd.toml").stdout
    box.wait_for("wgsyncd.service active", lambda: box.unit_property("wgsyncd.service", "MainPID") != "0")
    pid_before = box.unit_property("wgsyncd.service", "MainPID")
    crun(box, *APT, "install", "--reinstall", f"/dist/{installed.deb_name}", timeout=300)
    # the new code runs: postinst restarted the daemon, it did not just leave the old process
    assert box.unit_property("wgsyncd.service", "MainPID") != pid_before
    assert crun(box, "cat", "/etc/wgsyncd/wgsyncd.toml").stdout == before
    assert crun(box, "systemctl", "is-enabled", "wgsyncd.service", check=False).stdout.strip() == "enabled"
    box.wait_for(
        "wgsyncd.service active again",
        lambda: box.unit_property("wgsyncd.service", "ActiveState") == "active",
        timeout=60,
    )


def test_remove_then_purge_leaves_nothing(installed: Installed) -> None:
    """remove stops every unit; purge removes /etc/wgsyncd, state, links and every file."""
    box = installed.box
    # an operator's enablement, which purge must clean up too
    crun(box, "systemctl", "enable", "wgsyncd.service", "wgsyncd-sync.timer")
    crun(box, "systemctl", "start", "wgsyncd.service", timeout=120)
    crun(
        box, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "remove", "-y", "-q", "wgsyncd", timeout=300
    )
    for unit in UNITS:
        assert box.unit_property(unit, "ActiveState") in ("inactive", ""), f"{unit} still active"
    running = csh(
        box, "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -c '[/]usr/bin/wgsyncd' || true"
    )
    assert running.stdout.strip() == "0", "a wgsyncd process survived apt-get remove"
    assert crun(box, "test", "-e", "/etc/wgsyncd/wgsyncd.toml", check=False).returncode == 0  # conffile kept
    crun(box, *APT, "purge", "wgsyncd", timeout=300)
    assert crun(box, "dpkg-query", "-W", "wgsyncd", check=False).returncode != 0
    leftovers = csh(
        box,
        "find / -xdev \\( -path /proc -o -path /sys -o -path /dist -o -path /run/wireguard \\) -prune"
        " -o \\( -name '*wgsyncd*' -o -path '/usr/lib/python3/dist-packages/wgsyncd*' \\) -print",
    ).stdout.split()
    assert leftovers == [], leftovers
    owned_dirs = ("/usr/lib/wgsyncd", "/etc/wgsyncd", "/var/lib/wgsyncd")
    for path in [*installed.files, *owned_dirs]:
        if path.startswith(owned_dirs) or "wgsyncd" in path:
            assert crun(box, "test", "-e", path, check=False).returncode != 0, f"{path} left after purge"


def test_vendor_path_goes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """wgsyncd/_vendor.py puts an existing private dir first on sys.path and ignores a missing one."""
    import sys

    from wgsyncd import _vendor

    monkeypatch.setattr(sys, "path", ["/somewhere"])
    assert _vendor.activate(str(tmp_path / "missing")) is False
    assert sys.path == ["/somewhere"]
    assert _vendor.activate(str(tmp_path)) is True
    assert _vendor.activate(str(tmp_path)) is True
    assert sys.path == [str(tmp_path), "/somewhere"]


def test_man_page_names_every_command() -> None:
    """The hand-written wgsyncd(8) lists every CLI command, so it cannot silently go stale."""
    import click

    from wgsyncd.cli import main

    page = (REPO / "debian/wgsyncd.8").read_text().replace("\\-", "-")

    def names(group: click.Group, prefix: str = "") -> list[str]:
        out = []
        ctx = click.Context(group)
        for name in group.list_commands(ctx):  # with the groups imported only when named
            cmd = group.get_command(ctx, name)
            out.append(prefix + name)
            if isinstance(cmd, click.Group):
                out += names(cmd, f"{prefix}{name} ")
        return out

    missing = [n for n in names(main) if n.split()[-1] not in page]
    assert not missing, f"debian/wgsyncd.8 does not describe: {missing}"
    if shutil.which("man") is None:
        return  # roff warnings are checked where man-db is installed (lintian checks them too)
    lint = subprocess.run(
        ["man", "--warnings", "-l", str(REPO / "debian/wgsyncd.8")],
        capture_output=True,
        text=True,
        env={**os.environ, "MANWIDTH": "80"},
        check=False,
    )
    assert lint.stderr.strip() == "", lint.stderr
