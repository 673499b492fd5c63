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

import json
import shutil
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.test_restore import running
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
    assert (
        f"warning: host host-signed version 1 is signed by key {signing.key_id(leaked.verify_key)}, which "
        f"{host.trust_file()} retires after version 1: if that key leaked before" in out.stderr
    )
    # history's trust column says the same as restore: ok, with that warning; refused above N
    listed = host.wgsyncd("history", "--json", "--trusted-keys", str(host.trust_file()))
    trust_of = {r["version"]: r["trust"] for r in json.loads(listed.stdout)}
    assert trust_of[1] == (
        f"ok, with a warning: version 1 is signed by key {signing.key_id(leaked.verify_key)}, which "
        f"{host.trust_file()} retires after version 1: if that key leaked before this version was "
        "written, this version may be the thief's"
    )
    assert trust_of[2] == "ok"
    # and the host's next cycle signs a head with its current key: the latest restores again
    host.wgsyncd("sync")
    out = _restore(host, key_file, tmp_path / "latest", "--json")
    assert '"version": 2' in out.stdout and "vouched at" in out.stdout


def test_a_retired_key_cannot_sign_above_a_version_the_current_key_signed(host, recovery, tmp_path):  # noqa: F811
    """Review finding 1: the new key's chain numbered inside 1..N (the database owner deleted the
    host's versions before the reinstalled host's first cycle, or the operator retired the old key
    at too high an N). The thief signs version 2 with the old key, chained onto the new key's
    version 1: 2 <= N, and "newer than the head" was only a note, so it was restored."""
    key_file, public = recovery
    from tests.test_restore_head import _revoke_one_peer

    _revoke_one_peer(host)  # the old key signs versions 1 and 2 (N = 2)
    leaked = signing.load_or_create(str(host.state_dir))
    with psycopg.connect(host.dsn, autocommit=True) as conn:  # the owner deletes them before the reinstall
        conn.execute("DELETE FROM config_versions WHERE host_id = %s", (host.host_id,))
    shutil.rmtree(host.state_dir)
    host.wgsyncd("sync")
    fresh = host.verify_key()
    assert _head(host.dsn, host.host_id)[0] == 1  # the new key's chain starts at version 1
    host.wgsyncd(
        "keys", "retire", host.host_id, leaked.verify_key, "--after-version", "2",
        "--trusted-keys", str(host.trust_file()),
    )  # fmt: skip

    assert forge(host.dsn, host.host_id, host.name, public, "leaked", fresh, leaked) == 2
    target = tmp_path / "latest"
    fail = _restore(host, key_file, target, check=False)
    assert fail.returncode == 1 and not target.exists(), fail.stdout
    assert "version 2: refused: signed by key" in fail.stderr
    assert "a key pinned (and not retired) for host host-signed already signed version 1" in fail.stderr
    assert "--version 1" in fail.stderr
    fail = _restore(host, key_file, target, "--version", "2", check=False)
    assert fail.returncode == 1 and not target.exists(), fail.stdout
    before = running(host.ifaces[host.name])
    fail = host.wgsyncd("restore", "--apply", "--recovery-key", key_file, check=False)
    assert fail.returncode == 1 and "already signed version 1" in fail.stderr
    assert running(host.ifaces[host.name]) == before
    listed = host.wgsyncd("history", "--json", "--trusted-keys", str(host.trust_file()))
    trust_of = {r["version"]: r["trust"] for r in json.loads(listed.stdout)}
    assert trust_of[1] == "ok" and "already signed version 1" in trust_of[2]
