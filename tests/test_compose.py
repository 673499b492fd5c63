"""container/compose.yaml brought up for real, with Debian's podman-compose 1.0.3.

A copy of the repository's layout in a temporary directory (compose.yaml and the
Containerfile byte for byte, config/wgrest.conf, .env and secrets/ as the README's
setup writes them, the session's .deb in dist/), plus tests/beds/compose/compose.test.yaml,
which adds a throwaway PostgreSQL and points /etc/wireguard at the test's directory.
`podman-compose build wgrest-sync` builds the image from the .deb; the wgrest stand-in
image (the spec-faithful test server as /wgrest) replaces the real wgrest through
WGREST_IMAGE in .env. `podman-compose up -d` then starts every service on host
networking, and the peers of a real wireguard-go interface must land in that
PostgreSQL with their keys, seen by the kernel, the conf file and wgrest alike.
Offline: the debootstrap base is imported as debian:bookworm-slim (--pull=never).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.beds.podman import BUILD_FLAGS, RUN_FLAGS, Podman, cached_image, podman_missing, start_store
from tests.beds.postgres import free_tcp_port
from tests.beds.wireguard import WgBed, missing_reason
from tests.test_deb import CACHE, REPO, build_deb, build_missing, debootstrap_tarball, unavailable

pytestmark = pytest.mark.slow

BEDS = REPO / "tests/beds"
SYNC_IMAGE = "localhost/wgrest-sync:compose-test"
STANDIN_IMAGE = "localhost/wgrest-standin:compose-test"
POSTGRES_IMAGE = "localhost/wgsyncd-test-postgres:latest"
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def compose_missing() -> str | None:
    """Why podman-compose cannot run here, or None."""
    reason = podman_missing()
    if reason:
        return reason
    if shutil.which("podman-compose") is None:
        return "podman-compose is not installed (apt-get install podman-compose)"
    return build_missing() or missing_reason()


class Project:
    """The copied layout and the podman-compose command line that drives it."""

    def __init__(self, root: Path, podman: Podman, name: str) -> None:
        self.root = root
        self.podman = podman
        self.name = name

    @property
    def dir(self) -> Path:
        """Where compose.yaml is (podman-compose runs from there, like an operator)."""
        return self.root / "container"

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        """``podman-compose ARGS`` on compose.yaml + compose.test.yaml (checked unless told)."""
        cmd = [
            "podman-compose",
            "--podman-path",
            str(REPO / "container/podman-hostnet"),
            "--podman-build-args",
            shlex.join(BUILD_FLAGS),
            "--podman-run-args",
            shlex.join(RUN_FLAGS),
            "-p",
            self.name,
            "-f",
            "compose.yaml",
            "-f",
            "compose.test.yaml",
            *args,
        ]
        env = {**CLEAN_ENV, "PODMAN": str(self.podman.wrapper())}
        proc = subprocess.run(
            cmd, cwd=self.dir, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert proc.returncode == 0 or not check, (
            f"podman-compose {' '.join(args)}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
        return proc

    def logs(self, service: str) -> str:
        """A service's container output (stdout and stderr)."""
        proc = self.podman.run("logs", f"{self.name}_{service}_1", check=False)
        return proc.stdout + proc.stderr


def make_layout(root: Path, deb: Path, env: dict[str, str]) -> None:
    """The repository's layout, set up the way container/README.md tells an operator."""
    (root / "container").mkdir(parents=True)
    (root / "config").mkdir()
    (root / "dist").mkdir()
    for name in ("compose.yaml", "Containerfile"):
        shutil.copy2(REPO / "container" / name, root / "container" / name)
    shutil.copy2(BEDS / "compose/compose.test.yaml", root / "container/compose.test.yaml")
    shutil.copy2(deb, root / "dist" / deb.name)
    port = env["WGREST_URL"].rsplit(":", 1)[1]
    example = (REPO / "config/wgrest.conf.example").read_text()
    (root / "config/wgrest.conf").write_text(example.replace("127.0.0.1:51822", f"127.0.0.1:{port}"))
    dotenv = root / "container/.env"
    dotenv.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    dotenv.chmod(0o600)
    secrets = root / "container/secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "db-password").write_text("not-needed-with-trust-auth")
    (secrets / "wgrest-token").write_text(uuid.uuid4().hex)
    for path in secrets.iterdir():
        path.chmod(0o600)


def build_standin(podman: Podman) -> None:
    """The wgrest stand-in image, FROM the wgrest-sync image podman-compose just built."""
    context = Path(tempfile.mkdtemp(prefix="wgs-standin-", dir="/tmp"))
    try:
        for name in ("wgrest_server.py", "wgrest_standin.py"):
            shutil.copy2(BEDS / name, context / name)
        podman.run(
            "build",
            *BUILD_FLAGS,
            "--build-arg",
            f"BASE={SYNC_IMAGE}",
            "-t",
            STANDIN_IMAGE,
            "-f",
            str(BEDS / "compose/wgrest-standin.Containerfile"),
            str(context),
            timeout=300,
        )
    finally:
        shutil.rmtree(context, ignore_errors=True)


@pytest.fixture(scope="module")
def store() -> Iterator[Podman]:
    """A private podman store with the base image and the cached PostgreSQL image."""
    reason = compose_missing()
    if reason:
        unavailable(reason)
    base = debootstrap_tarball("podman-base", ())
    podman = start_store(base)
    try:
        cached_image(podman, POSTGRES_IMAGE, BEDS / "compose/postgres.Containerfile", CACHE, salt=base.name)
        yield podman
    finally:
        podman.close()


def _db_peers(dsn: str, host_id: str, iface: str) -> dict[str, set[str]]:
    """Public key -> sources of the interface's live peers (empty until the first sync)."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            rows = conn.execute(
                "SELECT public_key, sources FROM peers"
                " WHERE host_id = %s AND interface = %s AND removed_at IS NULL",
                (host_id, iface),
            ).fetchall()
    except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
        return {}  # PostgreSQL still starting, or wgsyncd has not migrated yet
    return {r[0]: set(r[1]) for r in rows}


def _status(url: str, token: str | None) -> int:
    """The HTTP status of a GET (the stand-in's auth, checked from the host)."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_compose_up_syncs_peers_into_postgres(store: Podman, wg_bed: WgBed, tmp_path: Path) -> None:
    """podman-compose up: wgrest-sync, PostgreSQL and the wgrest stand-in; the peers land."""
    wg_iface = wg_bed.create(peers=4)  # wireguard-go in its own netns, socket in /run/wireguard
    pg_port, wgrest_port = free_tcp_port(), free_tcp_port()
    host_id = f"compose-{uuid.uuid4().hex[:8]}"
    wgdir = tmp_path / "wireguard"
    wgdir.mkdir(mode=0o700)
    (wgdir / f"{wg_iface.name}.conf").write_text(wg_iface.showconf())
    dsn = f"host=127.0.0.1 port={pg_port} dbname=postgres user=postgres"
    env = {
        "WGSYNCD_DATABASE_DSN": dsn,
        "WGSYNCD_HOST_ID": host_id,
        "WGSYNCD_INTERFACES": wg_iface.name,
        "WGSYNCD_DAEMON_INTERVAL": "2",
        "WGREST_SYNC_IMAGE": SYNC_IMAGE,
        "WGREST_IMAGE": STANDIN_IMAGE,
        "WGREST_URL": f"http://127.0.0.1:{wgrest_port}",
        "TEST_POSTGRES_IMAGE": POSTGRES_IMAGE,
        "TEST_POSTGRES_PORT": str(pg_port),
        "TEST_WIREGUARD_DIR": str(wgdir),
    }
    project = Project(tmp_path / "repo", store, f"wgs{uuid.uuid4().hex[:8]}")
    make_layout(project.root, build_deb(), env)
    assert (project.dir / "compose.yaml").read_bytes() == (REPO / "container/compose.yaml").read_bytes()

    started = time.monotonic()
    project.compose("build", "wgrest-sync")  # compose.yaml's own build: ../dist + Containerfile
    build_standin(store)
    print(f"images built in {time.monotonic() - started:.1f} s")
    try:
        project.compose("up", "-d")
        expected = {line.split("\t")[0] for line in wg_iface.dump().splitlines()[1:]}
        assert len(expected) == 4
        deadline = time.monotonic() + 90
        peers: dict[str, set[str]] = {}
        while time.monotonic() < deadline and set(peers) != expected:
            time.sleep(0.5)  # polling the database with a deadline
            peers = _db_peers(dsn, host_id, wg_iface.name)
        assert set(peers) == expected, f"peers in PostgreSQL: {peers}" + "".join(
            f"\n--- {service}:\n{project.logs(service)[-2000:]}"
            for service in ("wgrest-sync", "wgrest", "postgres")
        )
        print(f"peers landed {time.monotonic() - started:.1f} s after the build started")
        # every peer was read from the kernel (socket), the conf file and the wgrest stand-in
        assert all(src == {"kernel", "conf", "wgrest"} for src in peers.values()), peers
        # wgrest got its token from the compose secret: without it, 401; with it, 200
        token = (project.dir / "secrets/wgrest-token").read_text()
        url = f"http://127.0.0.1:{wgrest_port}/v1/devices/"
        assert _status(url, None) == 401 and _status(url, token) == 200
        # host networking for all; wgsyncd's logs are JSON lines without key material
        for service in ("postgres", "wgrest", "wgrest-sync"):
            data = json.loads(store.run("inspect", f"{project.name}_{service}_1").stdout)[0]
            assert data["HostConfig"]["NetworkMode"] == "host", (service, data["HostConfig"]["NetworkMode"])
            assert data["State"]["Running"], (service, data["State"])
        # every ${...} of compose.yaml was filled from .env (none left literally)
        sync_env = json.loads(store.run("inspect", f"{project.name}_wgrest-sync_1").stdout)[0]["Config"][
            "Env"
        ]
        assert f"WGSYNCD_HOST_ID={host_id}" in sync_env and not any("${" in e for e in sync_env), sync_env
        lines = [line for line in project.logs("wgrest-sync").splitlines() if line.strip()]
        assert lines and all(json.loads(line) for line in lines)
        assert wg_iface.showconf().split("PrivateKey = ")[1].split()[0] not in project.logs("wgrest-sync")
    finally:
        project.compose("down", timeout=180, check=False)


def test_override_and_production_file_validate_with_docker_compose(tmp_path: Path) -> None:
    """Debian's docker-compose 1.29 accepts compose.yaml with the test's override too."""
    if shutil.which("docker-compose") is None:
        unavailable("docker-compose is not installed")
    (tmp_path / "container").mkdir()
    (tmp_path / "dist").mkdir()  # the build context, as in a clean checkout
    shutil.copy2(REPO / "container/compose.yaml", tmp_path / "container/compose.yaml")
    shutil.copy2(BEDS / "compose/compose.test.yaml", tmp_path / "container/compose.test.yaml")
    proc = subprocess.run(
        ["docker-compose", "-f", "compose.yaml", "-f", "compose.test.yaml", "config"],
        cwd=tmp_path / "container",
        env={**CLEAN_ENV, "TEST_WIREGUARD_DIR": "/srv/wg-test", "WGREST_IMAGE": "localhost/wgrest:pinned"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # the override replaces /etc/wireguard (same target), it does not mount a second one
    assert "/srv/wg-test:/etc/wireguard:ro" in proc.stdout
    assert "/etc/wireguard:/etc/wireguard" not in proc.stdout
    assert proc.stdout.count("network_mode: host") == 4


def test_wgrest_image_has_no_default_and_unset_stops_compose() -> None:
    """The privileged wgrest image is the one the operator pinned: unset, compose refuses to start.

    wgrest publishes no image and no digest could be checked from here, so any default
    would run an unverified privileged container on the host network.
    """
    text = (REPO / "container/compose.yaml").read_text()
    line = next(x for x in text.splitlines() if "WGREST_IMAGE" in x and "image:" in x)
    assert "${WGREST_IMAGE:?" in line and "1.0.0-alpha10.5" in line and ":-" not in line, line
    if shutil.which("docker-compose") is None:
        unavailable("docker-compose is not installed")
    proc = subprocess.run(
        ["docker-compose", "-f", str(REPO / "container/compose.yaml"), "config", "-q"],
        cwd=tempfile.gettempdir(),
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0 and "WGREST_IMAGE" in proc.stderr, proc.stderr
