"""review6: reproductions of findings on the signed head (cb3d761). Real PostgreSQL, real CLI.

Each test asserts the CURRENT behaviour that the review reports as a weakness, so it
passes today and shows exactly what the attacker gets; flip the asserts with the fix.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.test_restore import history
from tests.test_restore_signed import _head, _set_head, host, recovery  # noqa: F401 (fixtures)

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("edit", ["blank", "garbage signature"])
def test_finding1_withheld_newest_plus_blanked_head_restores_the_old_version(host, recovery, tmp_path, edit):  # noqa: F811
    """The DB owner deletes version 2 (which revoked a peer) AND blanks or garbles the head:
    restore of the latest exits 0 and puts the revoked peer back; only a stderr warning."""
    key_file, _public = recovery
    revoked = host.specs[host.name].pop()
    host.apply(host.name)
    host.wgsyncd("sync")
    assert [r["version"] for r in history(host)] == [2, 1]
    with psycopg.connect(host.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM config_versions WHERE host_id = %s AND version = 2", (host.host_id,))
    version, link, at, _signature = _head(host.dsn, host.host_id)
    assert version == 2
    _set_head(host.dsn, host.host_id, (None, None, None, None) if edit == "blank" else (2, link, at, "AAAA"))
    target = tmp_path / "t"
    out = host.wgsyncd("restore", "--to-dir", str(target), "--recovery-key", key_file, "--json")
    got = json.loads(out.stdout)
    assert got["version"] == 1 and got["vouched"] is None  # the old version, exit 0
    assert revoked.public_key in (target / f"{host.name}.conf").read_text()  # revoked peer is back
    assert any("nothing shows that version 1 is not older" in w for w in got["warnings"])


def test_finding3_head_older_than_restored_version_is_shown_as_vouching_for_the_old_one(
    host,  # noqa: F811
    recovery,  # noqa: F811
    tmp_path,
):
    """An agent before 0009 (downgrade) or a replayed older head: the latest restored is 2,
    the head names 1; the output said 'vouched ... that version 1 is its newest' while it
    restored version 2. FIXED on this branch: the line says version 2 is newer than the head."""
    key_file, _public = recovery
    old = _head(host.dsn, host.host_id)
    host.specs[host.name].pop()
    host.apply(host.name)
    host.wgsyncd("sync")
    _set_head(host.dsn, host.host_id, old)  # what an old agent leaves: the head of version 1
    out = host.wgsyncd("restore", "--to-dir", str(tmp_path / "t"), "--recovery-key", key_file, "--json")
    got = json.loads(out.stdout)
    assert got["version"] == 2
    assert "that version 1 was its newest; version 2 is newer" in got["vouched"] and got["warnings"] == []


def test_finding2_a_cycle_between_picking_the_latest_and_reading_the_head_is_called_withholding(
    host,  # noqa: F811
    recovery,  # noqa: F811
):
    """restore reads the latest version, then the chain and the head: a live host committing
    version 2 in between (or a database answering the two reads differently) made restore
    put back version 1 as "the latest" while showing that the host vouched for version 2.
    FIXED on this branch (restore/trust.py head_check): refused, naming the way out."""
    from wgsyncd.restore import RestoreError, trust
    from wgsyncd.store import versions

    with psycopg.connect(host.dsn) as conn:
        ver = versions.load_version(conn, host.host_id)  # what _pick_version sees: version 1
        assert ver is not None and ver.version == 1
        host.specs[host.name].pop()
        host.apply(host.name)
        host.wgsyncd("sync")  # the host commits version 2 and its head meanwhile
        # before the fix: no error, version 1 restored as "the latest" with the line "vouched
        # ... that version 2 is its newest" and no warning
        with pytest.raises(
            RestoreError, match="picked as the newest, but host host-signed vouched at"
        ) as err:
            trust.check(conn, ver, str(host.trust_file()), picked=True, latest=True)
        assert "version 2 (which the database holds) is its newest; try again, or `--version 2`" in str(
            err.value
        )
        # asked for by number, version 1 is the operator's choice: no refusal, the head is shown
        got = trust.check(conn, ver, str(host.trust_file()), picked=False, latest=False)
        assert got.vouched is not None and got.vouched.endswith("that version 2 is its newest")


def test_finding2_a_database_answering_the_latest_query_differently_cannot_pass_an_old_version(
    host,  # noqa: F811
    recovery,  # noqa: F811
    tmp_path,
):
    """The attack behind finding 2: the owner makes the "newest version" query (it reads
    ``doc``) see only version 1 while the chain query sees 1 and 2 with its true head.
    Before the fix restore put back version 1 (the revoked peer) as the latest, exit 0, no
    warning, and printed "vouched ... that version 2 is its newest". Now: refused."""
    key_file, _public = recovery
    host.specs[host.name].pop()  # the operator revokes a peer: version 2
    host.apply(host.name)
    host.wgsyncd("sync")
    with psycopg.connect(host.dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE config_versions RENAME TO config_versions_real")
        conn.execute(
            "CREATE VIEW config_versions AS SELECT * FROM config_versions_real "
            "WHERE version < 2 OR position(', doc FROM' in current_query()) = 0"
        )
    target = tmp_path / "t"
    fail = host.wgsyncd("restore", "--to-dir", str(target), "--recovery-key", key_file, check=False)
    assert fail.returncode == 1 and not target.exists(), (fail.stdout, fail.stderr)
    assert "host host-signed version 1: refused: picked as the newest, but" in fail.stderr
    assert "`--version 2`" in fail.stderr


@pytest.mark.parametrize("at", ["infinity", "-infinity"])
def test_finding4_an_unreadable_head_time_is_ignored_like_an_unsigned_head(host, recovery, tmp_path, at):  # noqa: F811
    """The owner stores a head time psycopg cannot turn into a datetime. Before the fix:
    "DataError: timestamp too large" for the latest AND for --version 1 (no way out).
    FIXED (store/signed.py load_head): read as no head, the same warning as a blank one."""
    key_file, _public = recovery
    with psycopg.connect(host.dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE hosts SET head_at = '{at}' WHERE host_id = %s", (host.host_id,))
    for extra in ((), ("--version", "1")):
        target = tmp_path / f"t{len(extra)}"
        out = host.wgsyncd("restore", *extra, "--to-dir", str(target), "--recovery-key", key_file, "--json")
        got = json.loads(out.stdout)
        assert got["version"] == 1 and got["vouched"] is None
        assert any("has no signed head" in w for w in got["warnings"]), got["warnings"]
