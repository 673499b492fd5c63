"""The wgrest-sync image and the compose file.

The image is built OFFLINE with podman (TESTBEDS.md section 4) from a debootstrap
base imported as ``debian:bookworm-slim`` (``--pull=never``), with the very .deb the
install test uses. It then runs with ``--network=host`` against a real PostgreSQL
and a real wireguard-go interface (its control socket bind-mounted from
/run/wireguard, its conf file from a directory mounted at /etc/wireguard, read-only
like compose.yaml does), and the test waits for the peers to land in the database.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.beds.podman import BUILD_FLAGS, RUN_FLAGS, Podman, start_store
from tests.beds.podman import podman_missing as bed_podman_missing
from tests.beds.postgres import PgCluster
from tests.beds.wireguard import WgBed, WgIface, missing_reason
from tests.test_deb import REPO, build_deb, build_missing, debootstrap_tarball, unavailable

pytestmark = pytest.mark.slow

IMAGE = "localhost/wgrest-sync:test"
# what an operator puts in .env (compose.yaml has no default for the privileged wgrest image)
PINNED_EXAMPLE = "registry.example/wgrest:1.0.0-alpha10.5@sha256:" + "0" * 64


def test_compose_file_is_valid() -> None:
    """`docker-compose -f container/compose.yaml config -q` passes on a clean checkout."""
    if shutil.which("docker-compose") is None:
        unavailable(
            "docker-compose is not installed (apt-get install --no-install-recommends docker-compose)"
        )
    # an empty environment and another cwd: no .env, no secrets, nothing of ours leaks in
    proc = subprocess.run(
        ["docker-compose", "-f", str(REPO / "container/compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tempfile.gettempdir(),
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "WGREST_IMAGE": PINNED_EXAMPLE},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_compose_file_wires_the_three_services() -> None:
    """The seed's services, host networking, the mounts' modes and no secret in the file."""
    proc = subprocess.run(
        ["docker-compose", "-f", str(REPO / "container/compose.yaml"), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tempfile.gettempdir(),
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "WGREST_IMAGE": PINNED_EXAMPLE},
        check=False,
    )
    if proc.returncode != 0 and shutil.which("docker-compose") is None:
        unavailable("docker-compose is not installed")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for service in ("wireguard:", "wgrest:", "wgrest-sync:"):
        assert f"\n  {service}\n" in text, f"service {service} missing"
    assert text.count("network_mode: host") == 3
    assert "/etc/wireguard:/etc/wireguard:ro" in text and "/etc/wireguard:/etc/wireguard:rw" in text
    assert "/lib/modules:/lib/modules:ro" in text
    assert "wgrest-data:/var/lib/wgrest:ro" in text
    assert "wgsyncd-state:/var/lib/wgsyncd:rw" in text  # the signing key outlives the container
    assert "restart: 'no'" in text or 'restart: "no"' in text or "restart: no" in text
    assert "NET_ADMIN" in text


def podman_missing() -> str | None:
    """Why the container bed cannot run here, or None."""
    return bed_podman_missing() or build_missing() or missing_reason()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """Build the image offline from a debootstrap base and the session's .deb."""
    reason = podman_missing()
    if reason:
        unavailable(reason)
    deb = build_deb()
    podman = start_store(debootstrap_tarball("podman-base", ()))
    try:
        context = tmp_path_factory.mktemp("image-context")
        shutil.copy2(deb, context / deb.name)
        started = time.monotonic()
        podman.run(
            "build",
            *BUILD_FLAGS,
            "-t",
            IMAGE,
            "-f",
            str(REPO / "container/Containerfile"),
            str(context),
            timeout=600,
        )
        print(f"image built in {time.monotonic() - started:.1f} s")
        yield podman
    finally:
        podman.close()


def test_image_metadata(image: Podman) -> None:
    """CMD runs the daemon with JSON logs; the healthcheck is set; the .deb is installed."""
    data = json.loads(image.run("image", "inspect", IMAGE).stdout)[0]
    assert data["Config"]["Cmd"] == ["wgsyncd", "--json-logs", "run"]
    health = data.get("Healthcheck") or data.get("HealthCheck") or data["Config"].get("Healthcheck")
    assert health and health["Test"][1:] == ["wgsyncd", "status", "--local"], data
    out = image.run("run", "--rm", "--network=host", *RUN_FLAGS, IMAGE, "dpkg-query", "-W", "wgsyncd").stdout
    assert out.split() == ["wgsyncd", "0.1.0"]


def _db_peers(cluster: PgCluster, dbname: str, host_id: str, iface: str) -> dict[str, set[str]]:
    """Public key -> sources of the interface's live peers in the database (empty before a sync)."""
    import psycopg

    with psycopg.connect(cluster.dsn(dbname), connect_timeout=5) as conn:
        try:
            rows = conn.execute(
                "SELECT public_key, sources FROM peers"
                " WHERE host_id = %s AND interface = %s AND removed_at IS NULL",
                (host_id, iface),
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return set()
    return {r[0]: set(r[1]) for r in rows}


def _wait(what: str, check, timeout: float, diagnose=None):
    """Poll ``check()`` until truthy; at the deadline fail naming ``what`` (+ diagnostics)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)  # polling a condition with a deadline
    extra = f"\n{diagnose()}" if diagnose else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{extra}")


@pytest.fixture
def wg_iface() -> Iterator[WgIface]:
    """A wireguard-go interface with 4 peers in its own netns (socket in /run/wireguard)."""
    bed = WgBed()
    try:
        yield bed.create(peers=4)
    finally:
        bed.close()


def test_container_syncs_peers_into_postgres(image: Podman, wg_iface: WgIface, tmp_path: Path) -> None:
    """--network=host, /run/wireguard + /etc/wireguard read-only: the peers land in PostgreSQL."""
    pg_base = tempfile.mkdtemp(prefix="wgs-ctpg-", dir="/tmp")
    cluster = PgCluster.start(pg_base, tcp=True)
    name = f"wgsync-{uuid.uuid4().hex[:8]}"
    try:
        dbname = "ct_" + uuid.uuid4().hex[:8]
        cluster.create_database(dbname)
        host_id = f"ct-{uuid.uuid4().hex[:8]}"
        confdir = tmp_path / "wireguard"
        confdir.mkdir(mode=0o700)
        (confdir / f"{wg_iface.name}.conf").write_text(wg_iface.showconf())
        secret = tmp_path / "db-password"
        secret.write_text("not-needed-with-trust-auth\n")
        secret.chmod(0o600)
        image.run(
            "run",
            "-d",
            "--name",
            name,
            "--network=host",
            "--cap-add",
            "NET_ADMIN",
            *RUN_FLAGS,
            "-v",
            "/run/wireguard:/run/wireguard:ro",
            "-v",
            f"{confdir}:/etc/wireguard:ro",
            "-v",
            f"{secret}:/run/secrets/db-password:ro",
            "-e",
            f"WGSYNCD_DATABASE_DSN={cluster.dsn(dbname, via_tcp=True)}",
            "-e",
            "WGSYNCD_DATABASE_PASSWORD_FILE=/run/secrets/db-password",
            "-e",
            "WGSYNCD_DATABASE_AUTO_MIGRATE=true",
            "-e",
            f"WGSYNCD_HOST_ID={host_id}",
            "-e",
            f"WGSYNCD_INTERFACES={wg_iface.name}",
            "-e",
            "WGSYNCD_WGREST_ENABLED=false",
            "-e",
            "WGSYNCD_DAEMON_INTERVAL=2",
            IMAGE,
        )
        expected = {line.split("\t")[0] for line in wg_iface.dump().splitlines()[1:]}
        assert len(expected) == 4

        def logs() -> str:
            proc = image.run("logs", name, check=False)
            return proc.stdout + proc.stderr

        started = time.monotonic()
        _wait(
            "the peers in PostgreSQL",
            lambda: set(_db_peers(cluster, dbname, host_id, wg_iface.name)) == expected,
            timeout=60,
            diagnose=logs,
        )
        print(f"peers landed {time.monotonic() - started:.1f} s after start")
        # the control socket (ro bind) and the conf file (read via the vendored wgconfig)
        sources = _db_peers(cluster, dbname, host_id, wg_iface.name)
        assert all(src == {"kernel", "conf"} for src in sources.values()), sources
        state = json.loads(image.run("inspect", name).stdout)[0]["State"]
        assert state["Running"], state
        # logs on stdout/stderr, one JSON object per line, no key material
        lines = [line for line in logs().splitlines() if line.strip()]
        assert lines, "the daemon logged nothing"
        for line in lines:
            json.loads(line)
        assert wg_iface.showconf().split("PrivateKey = ")[1].split()[0] not in logs()
        # the image's healthcheck passes on a running container
        assert image.run("healthcheck", "run", name, check=False).returncode == 0
        # SIGTERM to PID 1 ends the daemon cleanly
        image.run("stop", "-t", "20", name, timeout=60)
        state = json.loads(image.run("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0, logs()
    finally:
        image.run("rm", "-f", name, check=False)
        cluster.stop("immediate")
        shutil.rmtree(pg_base, ignore_errors=True)
