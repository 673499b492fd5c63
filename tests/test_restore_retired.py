"""A host key that may have leaked is retired (`wgsyncd keys retire`), not left trusted.

Real wireguard-go, real PostgreSQL, the CLI in a subprocess. The attacker owns the
database and holds the host's *old* signing key (a stolen disk or backup of its state
directory); the host was reinstalled since, with a new key the operator pinned. While
the old key stays pinned as it was, the attacker makes restore's "latest" theirs: a
version with a root PostUp, signed with the old key and chained onto the genuine newest
one, and a head naming it. Retired after the last version it signed while safe, the
key still vouches for its own old versions and for nothing newer.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.test_restore_head import _head, _restore, _set_head
from tests.test_restore_signed import PWN, _signed, forge, host, recovery  # noqa: F401 (fixtures)
from wgsyncd import signing

pytestmark = pytest.mark.postgres


def _forge_head(host, leaked: signing.HostKey, version: int) -> None:  # noqa: F811
    """A head signed with the stolen key: 'my newest version is ``version``', dated now."""
    with psycopg.connect(host.dsn) as conn:
        link = _signed(conn, host.host_id, version).link()
    head = signing.SignedHead(host.host_id, version, link, datetime.now(UTC) + timedelta(seconds=1))
    _set_head(host.dsn, host.host_id, (version, link, head.at, leaked.sign(head.message())))


def test_a_leaked_retired_key_cannot_make_the_latest_theirs(host, recovery, tmp_path):  # noqa: F811
    key_file, public = recovery
    leaked = signing.load_or_create(str(host.state_dir))  # version 1 is signed with it
    shutil.rmtree(host.state_dir)  # reinstalled: a new key, a new chain (version 2), pinned
    host.wgsyncd("sync")
    fresh = host.verify_key()
    assert fresh != leaked.verify_key and _head(host.dsn, host.host_id)[0] == 2
    pinned = host.trust_file().read_text()
    assert leaked.verify_key in pinned and fresh in pinned

    # the attack, with the old key still pinned as it was: the PostUp gets restored
    forged = forge(host.dsn, host.host_id, host.name, public, "leaked", fresh, leaked)
    assert forged == 3
    _forge_head(host, leaked, forged)
    out = _restore(host, key_file, tmp_path / "before", "--json")
    assert '"version": 3' in out.stdout
    assert PWN in (tmp_path / "before" / f"{host.name}.conf").read_text()

    retired = host.wgsyncd(
        "keys", "retire", host.host_id, leaked.verify_key, "--after-version", "1",
        "--trusted-keys", str(host.trust_file()),
    )  # fmt: skip
    assert "retired: host host-signed key" in retired.stdout and "after version 1" in retired.stdout
    assert f"{leaked.verify_key} retired-after=1" in host.trust_file().read_text()

    target = tmp_path / "after"
    fail = _restore(host, key_file, target, check=False)
    assert fail.returncode == 1 and not target.exists(), fail.stderr
    assert "version 3: refused: signed by key" in fail.stderr
    assert (
        "retires after version 1: a retired key (it may have leaked) vouches for nothing newer" in fail.stderr
    )
    assert "--version 2" in fail.stderr  # the newest that verifies, offered as the way out

    # the forged version gone, its head kept: a head the retired key signed vouches for nothing
    with psycopg.connect(host.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM config_versions WHERE host_id = %s AND version = 3", (host.host_id,))
    _forge_head(host, leaked, 1)  # "my newest is 1": would make version 2 look forged
    fail = _restore(host, key_file, target, check=False)
    assert fail.returncode == 1 and not target.exists(), fail.stderr
    assert "not signed by a key pinned (and not retired)" in fail.stderr

    # what the old key signed while it was safe still restores, asked for by number
    out = _restore(host, key_file, tmp_path / "v1", "--version", "1")
    assert PWN not in (tmp_path / "v1" / f"{host.name}.conf").read_text()
    assert "warning: host host-signed: its head in the database is not signed by a key pinned" in out.stderr
    # and the host's next cycle signs a head with its current key: the latest restores again
    host.wgsyncd("sync")
    out = _restore(host, key_file, tmp_path / "latest", "--json")
    assert '"version": 2' in out.stdout and "vouched at" in out.stdout
