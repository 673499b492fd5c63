"""The signed head (migration 0009): restore of the latest refuses what the database withholds.

Real wireguard-go, real PostgreSQL, the CLI in a subprocess. The attacker owns the
database: it can delete, hide and edit any row, but holds no host's signing key. Each
attack is reproduced, then shown to fail safely (a refusal naming `--version N`, the way
out), or, where nothing can tell, to show the operator how old the evidence is.
Several cases came from a review (review6) and keep its finding numbers.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from nacl.signing import SigningKey

from tests.test_restore import history
from tests.test_restore_signed import _signed, host, recovery  # noqa: F401 (fixtures)
from wgsyncd import signing
from wgsyncd.restore import RestoreError, trust
from wgsyncd.store import signed, versions

pytestmark = pytest.mark.postgres


def _head(dsn: str, host_id: str) -> tuple:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT head_version, head_link, head_at, head_signature FROM hosts WHERE host_id = %s",
            (host_id,),
        ).fetchone()


def _set_head(dsn: str, host_id: str, head: tuple) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE hosts SET head_version = %s, head_link = %s, head_at = %s, head_signature = %s "
            "WHERE host_id = %s",
            (*head, host_id),
        )


def _revoke_one_peer(host) -> str:  # noqa: F811
    """The operator revokes a peer: version 2. Returns its key."""
    revoked = host.specs[host.name].pop()
    host.apply(host.name)
    host.wgsyncd("sync")
    assert [r["version"] for r in history(host)] == [2, 1]
    return revoked.public_key


def _withhold(host, version: int) -> None:  # noqa: F811
    with psycopg.connect(host.dsn, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM config_versions WHERE host_id = %s AND version = %s", (host.host_id, version)
        )


def _restore(host, key_file: str, target, *args: str, check: bool = True):  # noqa: F811
    return host.wgsyncd("restore", *args, "--to-dir", str(target), "--recovery-key", key_file, check=check)


def test_every_cycle_signs_the_head_and_restore_shows_it(host, recovery, tmp_path):  # noqa: F811
    """The head names the newest version and is renewed by every cycle, idle ones too."""
    key_file, _public = recovery
    first = _head(host.dsn, host.host_id)
    assert first[0] == 1 and first[3]
    host.wgsyncd("sync")  # idle: no new version, a new head time
    again = _head(host.dsn, host.host_id)
    assert again[:2] == first[:2] and again[2] > first[2] and again[3] != first[3]
    head = signing.SignedHead(host.host_id, *again)
    assert head.signed_by(host.verify_key())
    with psycopg.connect(host.dsn) as conn:
        v1 = _signed(conn, host.host_id, 1)
    assert v1.link() == head.link
    out = _restore(host, key_file, tmp_path / "t", "--json")
    got = json.loads(out.stdout)
    assert got["version"] == 1 and got["warnings"] == []
    when = again[2].astimezone(UTC).isoformat(timespec="seconds")
    assert got["vouched"].startswith(f"host {host.host_id} vouched at {when}")
    assert got["vouched"].endswith("that version 1 is its newest")


def test_withheld_newest_version_is_refused_by_the_signed_head(host, recovery, tmp_path):  # noqa: F811
    """The attack: the host is wiped; the database hides its newest version, whose change
    revoked a peer. The chain of what is left verifies; the head names the missing one."""
    key_file, _public = recovery
    revoked = _revoke_one_peer(host)
    head_time = _head(host.dsn, host.host_id)[2]
    _withhold(host, 2)
    target = tmp_path / "t"
    for args in ((), ("--at", datetime.now(UTC).isoformat())):  # --at after the head: bound too
        fail = _restore(host, key_file, target, *args, check=False)
        assert fail.returncode == 1 and not target.exists(), fail.stderr
        assert "host host-signed version 1: refused: host host-signed vouched at" in fail.stderr
        assert "that its newest config version is 2; the database does not hold it" in fail.stderr
        assert "`--version 1` restores it knowingly" in fail.stderr
    # --at before the head's time: the host had not said so yet then; a warning
    out = _restore(
        host, key_file, tmp_path / "at", "--at", (head_time - timedelta(microseconds=1)).isoformat()
    )
    assert "warning: host host-signed vouched at" in out.stderr and "does not hold it" in out.stderr
    # asked for by number, the older version restores, with the warning
    out = _restore(host, key_file, target, "--version", "1")
    assert "warning: host host-signed vouched at" in out.stderr and "does not hold it" in out.stderr
    assert revoked in (target / f"{host.name}.conf").read_text()


def test_a_replayed_older_head_shows_its_age(host, recovery, tmp_path):  # noqa: F811
    """The database also puts back a genuine, older head of version 1: restore goes on and
    shows that time, the evidence the operator weighs (a database cannot make a newer one)."""
    key_file, _public = recovery
    _revoke_one_peer(host)
    _withhold(host, 2)
    old_time = datetime.now(UTC) - timedelta(days=3)
    with psycopg.connect(host.dsn) as conn:
        v1 = _signed(conn, host.host_id, 1)
    stale = signing.SignedHead(host.host_id, 1, v1.link(), old_time)
    signature = signing.load_or_create(str(host.state_dir)).sign(stale.message())
    _set_head(host.dsn, host.host_id, (1, stale.link, stale.at, signature))
    out = _restore(host, key_file, tmp_path / "t")
    assert "restored host host-signed version 1" in out.stdout
    when = old_time.isoformat(timespec="seconds")
    assert f"vouched at {when} (3 days ago) that version 1 is its newest" in out.stdout


@pytest.mark.parametrize("edit", ["moved forward", "attacker key", "blank", "garbage signature", "infinity"])
def test_a_head_no_pinned_key_signed_blocks_the_latest_and_never_vouches(host, recovery, tmp_path, edit):  # noqa: F811
    """Finding 1 (and 4): the database withholds version 2 AND edits the head (a later time,
    a version of its own, none, a broken signature, a time psycopg cannot read). Restore of
    the latest refuses: nothing shows version 1 is the newest. `--version 1` restores it,
    with a warning naming why; the host's next cycle signs a true head again."""
    key_file, _public = recovery
    revoked = _revoke_one_peer(host)
    _withhold(host, 2)
    version, link, at, signature = _head(host.dsn, host.host_id)
    if edit == "moved forward":
        _set_head(host.dsn, host.host_id, (1, link, at + timedelta(days=1), signature))
    elif edit == "attacker key":
        forged = signing.SignedHead(host.host_id, 1, link, at)
        sig = base64.b64encode(SigningKey.generate().sign(forged.message()).signature).decode()
        _set_head(host.dsn, host.host_id, (1, link, at, sig))
    elif edit == "garbage signature":
        _set_head(host.dsn, host.host_id, (version, link, at, "AAAA"))
    elif edit == "infinity":
        with psycopg.connect(host.dsn, autocommit=True) as conn:
            conn.execute("UPDATE hosts SET head_at = 'infinity' WHERE host_id = %s", (host.host_id,))
    else:
        _set_head(host.dsn, host.host_id, (None, None, None, None))
    why = "has no signed head" if edit in ("blank", "infinity") else "its head in the database is not signed"
    target = tmp_path / "t"
    fail = _restore(host, key_file, target, check=False)
    assert fail.returncode == 1 and not target.exists(), fail.stderr
    assert "host host-signed version 1: refused: host host-signed" in fail.stderr and why in fail.stderr
    assert "`--version 1` restores it knowingly" in fail.stderr
    got = json.loads(_restore(host, key_file, target, "--version", "1", "--json").stdout)
    assert got["version"] == 1 and got["vouched"] is None
    assert any(why in w for w in got["warnings"]), got["warnings"]
    assert revoked in (target / f"{host.name}.conf").read_text()  # the operator's explicit choice
    host.wgsyncd("sync")  # the host, still alive, signs a true head again (of its new version 3)
    assert signing.SignedHead(host.host_id, *_head(host.dsn, host.host_id)).signed_by(host.verify_key())


def test_finding2_a_database_answering_the_latest_query_differently_cannot_pass_an_old_version(
    host,  # noqa: F811
    recovery,  # noqa: F811
    tmp_path,
):
    """The owner makes the "newest version" query (it reads ``doc``) see only version 1
    while the chain query sees 1 and 2 with its true head. Before the fix restore put back
    version 1 (the revoked peer) as the latest, exit 0, no warning."""
    key_file, _public = recovery
    _revoke_one_peer(host)
    with psycopg.connect(host.dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE config_versions RENAME TO config_versions_real")
        conn.execute(
            "CREATE VIEW config_versions AS SELECT * FROM config_versions_real "
            "WHERE version < 2 OR position(', doc FROM' in current_query()) = 0"
        )
    target = tmp_path / "t"
    fail = _restore(host, key_file, target, check=False)
    assert fail.returncode == 1 and not target.exists(), (fail.stdout, fail.stderr)
    assert "host host-signed version 1: refused: picked as the newest, but" in fail.stderr
    assert "answered restore's reads inconsistently; try again, or `--version 2`" in fail.stderr


def test_a_cycle_committed_while_restore_reads_is_not_called_withholding(host, recovery):  # noqa: F811
    """Finding 5: restore reads the head before it picks the version, so a live host that
    commits version 2 in between makes the chain newer than the head, never older: no
    refusal; the line says the picked version is newer than the head."""
    with psycopg.connect(host.dsn) as conn:
        head = signed.load_head(conn, host.host_id)  # what restore reads first: the head of 1
        assert head is not None and head.version == 1
        _revoke_one_peer(host)  # the host commits version 2 and its head meanwhile
        ver = versions.load_version(conn, host.host_id)  # then restore picks: version 2
        assert ver is not None and ver.version == 2
        got = trust.check(conn, ver, str(host.trust_file()), picked=True, head=head)
        assert got.vouched is not None and "that version 1 was its newest; version 2 is newer" in got.vouched
        # the other order, which restore no longer does, would look like withholding
        with pytest.raises(RestoreError, match="picked as the newest, but"):
            old = versions.load_version(conn, host.host_id, version=1)
            trust.check(conn, old, str(host.trust_file()), picked=True,
                        head=signed.load_head(conn, host.host_id))  # fmt: skip


def test_finding3_a_head_older_than_the_restored_version_says_so(host, recovery, tmp_path):  # noqa: F811
    """An agent before 0009 (a downgrade) or a replayed older head: the latest restored is
    2, the head names 1; the line says version 2 is newer than the head."""
    key_file, _public = recovery
    old = _head(host.dsn, host.host_id)
    _revoke_one_peer(host)
    _set_head(host.dsn, host.host_id, old)  # what an old agent leaves: the head of version 1
    got = json.loads(_restore(host, key_file, tmp_path / "t", "--json").stdout)
    assert got["version"] == 2
    assert "that version 1 was its newest; version 2 is newer" in got["vouched"] and got["warnings"] == []
