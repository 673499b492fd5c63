"""README's promise: on a fresh Debian 12, `git clone` then `make demo` is all it takes.

A clean bookworm (minbase + systemd, plus the `git` and `make` the README asks for;
no python3, no wireguard-go, no PostgreSQL) boots under real systemd in the nspawn
bed; a clean clone of this repository's HEAD is made inside it and `make demo` runs
as root with a clean environment. The demo must install its Debian packages itself
(saying which), build its venv with pip, and finish with its byte-identical restore.
apt inside uses the host's Debian sources, as the .deb test does.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.beds import nspawn
from tests.test_deb import clean_rootfs, crun, csh, debootstrap_tarball, unavailable

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# a fresh Debian 12 as the README assumes it: systemd, and git + make installed by the user
FRESH = ("systemd", "systemd-sysv", "dbus", "git", "make", "ca-certificates")


def trust_the_sites_network(box: nspawn.Container) -> None:
    """This machine's network, not the project: a site CA the host trusts (a TLS-inspecting
    egress proxy) and pip's pointer to the system bundle go into the container, as an
    operator's machine on that network would have them. Nothing of wgsyncd is copied."""
    cas = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    for ca in cas:
        box.write(f"/usr/local/share/ca-certificates/{ca.name}", ca.read_text())
    if cas:
        crun(box, "update-ca-certificates", timeout=120)
    host_pip = Path("/etc/pip.conf")
    if host_pip.is_file() and "cert" in host_pip.read_text():
        box.write("/etc/pip.conf", "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")


def test_make_demo_from_a_clean_clone_on_a_fresh_bookworm(tmp_path: Path) -> None:
    reason = nspawn.missing_requirements()
    if reason:
        unavailable(reason)
    try:
        tarball = debootstrap_tarball("fresh-demo", FRESH, clean_rootfs)
    except (nspawn.BedError, subprocess.SubprocessError, OSError) as exc:
        unavailable(f"fresh bookworm rootfs: {exc}")
        raise
    # what `git clone` would fetch: the committed HEAD, nothing of this work tree's state
    origin = Path(tempfile.mkdtemp(prefix="wgs-origin-", dir="/tmp"))
    subprocess.run(["git", "clone", "-q", "--bare", str(REPO), str(origin / "wgsyncd.git")], check=True)
    workdir = tmp_path / "box"
    workdir.mkdir()
    box = None
    try:
        # CAP_NET_ADMIN: the demo makes network namespaces and veth pairs, as on a real host
        box = nspawn.boot(tarball, [f"{origin}:/origin"], workdir, ("--capability=CAP_NET_ADMIN",))
        assert crun(box, "dpkg-query", "-W", "wireguard-go", check=False).returncode != 0  # really fresh
        trust_the_sites_network(box)
        crun(box, "git", "clone", "-q", "/origin/wgsyncd.git", "/root/wgsyncd", timeout=120)
        res = csh(box, "cd /root/wgsyncd && make demo 2>&1", check=False, timeout=1500)
        out = res.stdout + res.stderr
        assert res.returncode == 0, out[-6000:]
        assert "install-deps: installing for 'demo':" in out and "wireguard-go" in out, out[:3000]
        assert "byte-identical to the original: True" in out, out[-4000:]
        assert "status=ok" in out  # `wgsyncd status` piped: the key=value lines, not the table
        # a second run installs nothing: every package is there now
        again = csh(box, "cd /root/wgsyncd && ./scripts/install-deps demo 2>&1", timeout=120)
        assert again.stdout.strip() == ""
    finally:
        if box is not None:
            nspawn.shutdown(box)
        shutil.rmtree(workdir / "rootfs", ignore_errors=True)
        shutil.rmtree(origin, ignore_errors=True)
