"""compose.yaml's wgrest entrypoint: no unauthenticated wgrest API (review finding M1).

wgrest turns its key auth off for an empty token, so a missing or empty secret file
would leave the API on 127.0.0.1:51822 (host network) open to every local process.
The entrypoint is run here by the same /bin/sh, with the secret path and the wgrest
binary pointed at files of the test: compose's `$$` unescaped as compose does.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def entrypoint_script() -> str:
    """The `sh -c` script of the wgrest service, with compose's `$$` turned into `$`."""
    text = (REPO / "container/compose.yaml").read_text()
    service = text[text.index("\n  wgrest:\n") :]
    line = next(x for x in service.splitlines() if x.strip().startswith("entrypoint:"))
    argv = json.loads(line.split("entrypoint:", 1)[1])
    assert argv[:2] == ["/bin/sh", "-c"], argv
    return argv[2].replace("$$", "$")


def run(tmp_path: Path, token: str | None) -> subprocess.CompletedProcess[str]:
    """The entrypoint with ``token`` as the secret (None: no secret file); a fake wgrest prints its env."""
    secret = tmp_path / "wgrest-token"
    if token is not None:
        secret.write_text(token)
    fake = tmp_path / "wgrest"
    fake.write_text('#!/bin/sh\necho "started with token=$WGREST_STATIC_AUTH_TOKEN args=$*"\n')
    fake.chmod(0o755)
    script = (
        entrypoint_script()
        .replace("/run/secrets/wgrest-token", str(secret))
        .replace("exec /wgrest", f"exec {fake}")
    )
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=10, check=False)


@pytest.mark.parametrize("token", [None, "", "short-token"], ids=["missing", "empty", "short"])
def test_wgrest_does_not_start_without_a_real_token(tmp_path: Path, token: str | None) -> None:
    proc = run(tmp_path, token)
    assert proc.returncode == 1, proc
    assert "started" not in proc.stdout
    assert "wgrest-token secret is missing or shorter than 32 characters" in proc.stderr


def test_wgrest_starts_with_the_token_from_the_secret(tmp_path: Path) -> None:
    token = "k" * 43 + "="  # `wg genpsk`'s length, what container/README.md tells operators to use
    proc = run(tmp_path, token)
    assert proc.returncode == 0, proc
    assert proc.stdout.strip() == f"started with token={token} args=--conf /etc/wgrest/wgrest.conf"
