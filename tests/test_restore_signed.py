"""Signed config versions (issue 12 items 1, 2, 6): each attack reproduced, then refused.

Real wireguard-go, real PostgreSQL, the CLI in a subprocess. The attacker owns the
database and holds the recovery PUBLIC key (every host has it), so they can seal
anything and write any row; what they lack is a host's signing key and the
operator's trust file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import stat
from datetime import timedelta

import psycopg
import pytest
from nacl.signing import SigningKey
from psycopg.types.json import Jsonb

from tests.beds.host import strip
from tests.beds.wireguard import PeerSpec, genkey, random_key
from tests.test_restore import RestoreHost, history, running, snapshot_files
from wgsyncd import secrets, signing
from wgsyncd.state import key_fingerprint
from wgsyncd.store import signed, versions

pytestmark = pytest.mark.postgres

PWN = "touch /tmp/wgsyncd-forged-postup"


@pytest.fixture
def recovery(tmp_path) -> tuple[str, str]:
    path = tmp_path / "recovery.key"
    return str(path), secrets.init_recovery(str(path)).public


@pytest.fixture
def host(tmp_path, wg_bed, pg_cluster, recovery):
    """A host synced once (signed version 1) with its key pinned in the operator's trust file."""
    h = RestoreHost(tmp_path, wg_bed, pg_cluster.create_database(), "host-signed")
    h.name = h.add_interface(4)
    h.write_config(recovery_public=recovery[1])
    h.wgsyncd("sync")
    return h


def _row(conn, host_id: str, version: int) -> dict:
    cur = conn.execute(
        "SELECT * FROM config_versions WHERE host_id = %s AND version = %s", (host_id, version)
    )
    names = [d.name for d in cur.description]
    return dict(zip(names, cur.fetchone(), strict=True))


def _signed(conn, host_id: str, version: int) -> signing.Signed:
    row = _row(conn, host_id, version)
    return signed.from_row(tuple(row[c.strip()] for c in signed.SIGNED_COLS.split(",")))


def _insert(conn, row: dict) -> None:
    row = {k: Jsonb(v) if k in ("doc", "sealed_sha256") and v is not None else v for k, v in row.items()}
    cols = ", ".join(row)
    conn.execute(
        f"INSERT INTO config_versions ({cols}) VALUES ({', '.join(['%s'] * len(row))})", list(row.values())
    )


def forge(
    dsn: str, host_id: str, name: str, public: str, mode: str, host_verify_key: str, leaked=None
) -> int:
    """What a database owner can do: a new latest version whose sealed conf runs PostUp as root.

    ``mode``: "unsigned", "own-key" (signed with the attacker's key, which is named in
    the row) or "claims-host-key" (signed with the attacker's key, the row names the
    host's key); ``leaked`` (a signing.HostKey the attacker stole): signed with it, named.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        latest = conn.execute(
            "SELECT max(version) FROM config_versions WHERE host_id = %s", (host_id,)
        ).fetchone()[0]
        row = _row(conn, host_id, latest)
        doc = json.loads(json.dumps(row["doc"]))
        iface = doc["interfaces"][name]
        iface["post_up"] = [PWN]
        key = genkey()
        clear = {
            "private_key": key,
            "conf_text": f"[Interface]\nPrivateKey = {key}\nListenPort = 51820\nPostUp = {PWN}\n",
            "preshared_keys": {},
            "peer_private_keys": {},
        }
        fp = key_fingerprint(public)
        iface["secrets"] = {"sha256": versions.secrets_sha256(clear), "sealed_to": fp}
        blob = secrets.seal_json(public, clear)
        conn.execute(
            "INSERT INTO config_secrets VALUES (%s, %s, %s, %s, %s, now())",
            (host_id, name, iface["secrets"]["sha256"], fp, blob),
        )
        prev_link = signed.from_row(tuple(row[c.strip()] for c in signed.SIGNED_COLS.split(","))).link()
        row.update(version=latest + 1, doc=doc, content_sha256=versions.content_sha256(doc))
        if mode == "unsigned":
            row.update(
                prev_sha256=None, doc_sha256=None, sealed_sha256=None, signing_key=None, signature=None
            )
        else:
            attacker = SigningKey.generate()
            sign = leaked.sign if leaked else lambda m: base64.b64encode(attacker.sign(m).signature).decode()
            fields = signing.Signed(
                host_id,
                latest + 1,
                prev_link,  # chained onto the genuine latest
                row["created_at"] + timedelta(seconds=1),
                row["content_sha256"],
                signing.doc_sha256(doc),
                {name: hashlib.sha256(blob).hexdigest()},
                fp,
            )
            row.update(
                created_at=fields.created_at,
                prev_sha256=fields.prev,
                doc_sha256=fields.doc_sha256,
                sealed_sha256=fields.sealed,
                signature=sign(fields.message()),
                signing_key=leaked.verify_key
                if leaked
                else host_verify_key
                if mode == "claims-host-key"
                else base64.b64encode(bytes(attacker.verify_key)).decode(),
            )
        _insert(conn, row)
    return latest + 1


def _status_message(dsn: str, host_id: str) -> str | None:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT message FROM sync_status WHERE host_id = %s ORDER BY started_at DESC LIMIT 1", (host_id,)
        ).fetchone()[0]


# ---------------------------------------------------------------- forged by the database owner


@pytest.mark.parametrize("mode", ["unsigned", "own-key", "claims-host-key"])
def test_forged_version_by_database_owner_is_refused_and_the_host_repairs(host, recovery, tmp_path, mode):
    key_file, public = recovery
    target = tmp_path / "target"
    v = forge(host.dsn, host.host_id, host.name, public, mode, host.verify_key())
    assert v == 2

    reason = {
        "unsigned": "refused: unsigned",
        "own-key": "which is not pinned for host host-signed",
        "claims-host-key": "signature does not verify",
    }[mode]
    for t in (["--to-dir", str(target)], ["--apply"]):
        before = running(host.ifaces[host.name])
        fail = host.wgsyncd("restore", *t, "--recovery-key", key_file, check=False)
        assert fail.returncode == 1, fail.stdout
        assert "host host-signed version 2: refused" in fail.stderr and reason in fail.stderr, fail.stderr
        assert "the newest version that verifies is 1: --version 1" in fail.stderr
        assert len(fail.stderr.strip().splitlines()) == 1
        assert not target.exists() and running(host.ifaces[host.name]) == before
    # --allow-unsigned never lets a wrongly signed version through, nor an unsigned one after signed ones
    args = ("--to-dir", str(target), "--allow-unsigned", "--recovery-key", key_file)
    fail = host.wgsyncd("restore", *args, check=False)
    assert fail.returncode == 1 and reason in fail.stderr and not target.exists()
    if mode == "unsigned":
        assert "it follows signed versions, so it is not from before signing" in fail.stderr

    # the host's next cycle: a tamper line (journal and sync_status) and a new, signed version 3
    out = host.wgsyncd("sync")
    assert "tamper: the latest config version is 2" in out.stderr, out.stderr
    assert "this host last signed version 1" in out.stderr
    assert "tamper: the latest config version is 2" in (_status_message(host.dsn, host.host_id) or "")
    assert [r["version"] for r in history(host)] == [3, 2, 1]
    with psycopg.connect(host.dsn) as conn:
        v1, v3 = (_signed(conn, host.host_id, n) for n in (1, 3))
    assert v3.prev == v1.link() and v3.signed_by(host.verify_key())
    out = host.wgsyncd("restore", "--to-dir", str(target), "--recovery-key", key_file)
    assert "version 3" in out.stdout
    assert PWN not in (target / f"{host.name}.conf").read_text()
    assert (target / f"{host.name}.conf").read_bytes() == (host.conf_dir / f"{host.name}.conf").read_bytes()
    # and the cycle after that is quiet again
    out = host.wgsyncd("sync")
    assert "tamper" not in out.stderr and _status_message(host.dsn, host.host_id) is None
    assert len(history(host)) == 3


def test_database_pin_rewritten_by_the_owner_is_not_trusted(host, recovery, tmp_path):
    """The owner rewrites host_signing_keys to their own key and forges: still refused; a warning names it."""
    key_file, public = recovery
    attacker = base64.b64encode(bytes(SigningKey.generate().verify_key)).decode()
    with psycopg.connect(host.dsn, autocommit=True) as conn:
        assert signed.pin_signing_key(conn, host.host_id, host.verify_key(), "add-host")
        assert not signed.pin_signing_key(conn, host.host_id, host.verify_key())
        assert signed.pinned_keys(conn, host.host_id) == [host.verify_key()]
        conn.execute("UPDATE host_signing_keys SET verify_key = %s", (attacker,))
    forge(host.dsn, host.host_id, host.name, public, "own-key", host.verify_key())
    fail = host.wgsyncd("restore", "--to-dir", str(tmp_path / "t"), "--recovery-key", key_file, check=False)
    assert fail.returncode == 1 and "not pinned for host host-signed" in fail.stderr
    out = host.wgsyncd(
        "restore", "--version", "1", "--to-dir", str(tmp_path / "t"), "--recovery-key", key_file
    )
    assert "restored host host-signed version 1" in out.stdout
    assert "the database's pins do not list key" in out.stderr


# ---------------------------------------------------------------- replay, edits, deletions


def test_replayed_edited_or_deleted_versions_are_refused(host, recovery, tmp_path):
    key_file, _public = recovery
    specs = host.specs[host.name]
    specs.append(PeerSpec(public_key=random_key(), allowed_ips=("10.99.7.0/24",)))
    host.apply(host.name)
    host.wgsyncd("sync")
    specs.pop(0)
    host.apply(host.name)
    host.wgsyncd("sync")
    assert [r["version"] for r in history(host)] == [3, 2, 1]
    target = tmp_path / "t"

    def refused(*args: str, why: str) -> None:
        fail = host.wgsyncd(
            "restore", *args, "--to-dir", str(target), "--recovery-key", key_file, check=False
        )
        assert fail.returncode == 1 and why in fail.stderr, fail.stderr
        assert not target.exists()

    # --at picks by the signed time: moving version 2 back in time makes it fail, not win
    with psycopg.connect(host.dsn, autocommit=True) as conn:
        t1, t2 = (_row(conn, host.host_id, n)["created_at"] for n in (1, 2))
        conn.execute(
            "UPDATE config_versions SET created_at = %s WHERE version = 2", (t1 + timedelta(microseconds=1),)
        )
    refused(
        "--at",
        (t1 + timedelta(microseconds=2)).isoformat(),
        why="version 2: refused: signature does not verify",
    )
    with psycopg.connect(host.dsn, autocommit=True) as conn:
        conn.execute("UPDATE config_versions SET created_at = %s WHERE version = 2", (t2,))

    # version 1, signed and genuine, replayed as the new latest version 4
    with psycopg.connect(host.dsn, autocommit=True) as conn:
        row = _row(conn, host.host_id, 1)
        row["version"] = 4
        _insert(conn, row)
    refused(why="version 4: refused: signature does not verify: the version was altered or replayed")
    out = host.wgsyncd("sync")  # the host notices and writes version 5 chained to its own version 3
    assert "tamper: the latest config version is 4" in out.stderr
    host.wgsyncd("restore", "--to-dir", str(target), "--recovery-key", key_file)
    assert snapshot_files(target)[f"{host.name}.conf"] == (host.conf_dir / f"{host.name}.conf").read_bytes()
    shutil.rmtree(target)

    # the document edited in place (signature columns untouched)
    with psycopg.connect(host.dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE config_versions SET doc = jsonb_set(doc, %s, %s) WHERE version = 3",
            (["interfaces", host.name, "post_up"], Jsonb([PWN])),
        )
    refused("--version", "3", why="version 3: refused: its document does not match the signed hash")

    # a version deleted from the middle: the versions after it are off the chain
    with psycopg.connect(host.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM config_versions WHERE version = 1")
    refused("--version", "5", why="off the chain")
    refused("--version", "3", why="off the chain")


def test_rolled_back_database_is_noticed_and_continued(host, recovery, tmp_path):
    """Deleting the newest versions (a rollback) is a tamper line; the host writes a new version."""
    key_file, _public = recovery
    host.specs[host.name].pop()
    host.apply(host.name)
    host.wgsyncd("sync")
    with psycopg.connect(host.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM config_versions WHERE version = 2")
    out = host.wgsyncd("sync")
    assert "tamper: the latest config version is 1 (an older or out-of-chain version" in out.stderr
    assert "its own last version 2 is gone or altered: the chain starts a new segment" in out.stderr
    hist = history(host)
    assert [r["version"] for r in hist] == [3, 1] and hist[0]["chain_start"]
    host.wgsyncd("restore", "--to-dir", str(tmp_path / "t"), "--recovery-key", key_file)
    assert (tmp_path / "t" / f"{host.name}.conf").read_bytes() == (
        host.conf_dir / f"{host.name}.conf"
    ).read_bytes()


# ---------------------------------------------------------------- key rotation, legacy versions


def test_key_rotation_keeps_old_versions_restorable(host, recovery, tmp_path):
    key_file, _public = recovery
    old_key = host.verify_key()
    v1_files = snapshot_files(host.conf_dir)
    trust_file = tmp_path / "operator-trust"
    host.trusted_keys = trust_file
    show = host.wgsyncd("keys", "show-signing")
    assert show.stdout.split() == [host.host_id, old_key]
    host.wgsyncd("keys", "trust", host.host_id, old_key, "--trusted-keys", str(trust_file), "--comment", "v1")

    # the host is reinstalled: a new state directory, a new key; same configuration
    shutil.rmtree(host.state_dir)
    out = super(RestoreHost, host).wgsyncd("sync")  # no auto-pin: the operator has not pinned it yet
    assert "starting a new signed chain" in out.stderr and "reinstalled host" in out.stderr
    assert "tamper" not in out.stderr
    new_key = host.verify_key()
    assert new_key != old_key
    hist = history(host)
    assert [r["version"] for r in hist] == [2, 1] and hist[0]["chain_start"]

    fail = host.wgsyncd("restore", "--to-dir", str(tmp_path / "a"), "--recovery-key", key_file, check=False)
    assert fail.returncode == 1 and "version 2: refused: signed by key" in fail.stderr
    assert signing.key_id(new_key) in fail.stderr and "not pinned" in fail.stderr
    host.wgsyncd("keys", "trust", host.host_id, new_key, "--trusted-keys", str(trust_file))
    again = host.wgsyncd("keys", "trust", host.host_id, new_key, "--trusted-keys", str(trust_file))
    assert "already pinned" in again.stdout
    assert len([x for x in trust_file.read_text().splitlines() if x and not x.startswith("#")]) == 2
    for version in ("1", "2"):
        target = tmp_path / f"v{version}"
        host.wgsyncd("restore", "--version", version, "--to-dir", str(target), "--recovery-key", key_file)
        assert snapshot_files(target) == v1_files
    listed = json.loads(host.wgsyncd("history", "--json", "--trusted-keys", str(trust_file)).stdout)
    assert [(r["version"], r["trust"], r["signing_key_id"]) for r in listed] == [
        (2, "ok", signing.key_id(new_key)),
        (1, "ok", signing.key_id(old_key)),
    ]


def test_unsigned_legacy_versions_need_allow_unsigned_and_an_upgraded_host_signs_at_once(
    host, recovery, tmp_path
):
    """Versions from before signing (NULL signature) and an agent upgraded in place (no record yet)."""
    key_file, _public = recovery
    with psycopg.connect(host.dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE config_versions SET prev_sha256 = NULL, doc_sha256 = NULL, sealed_sha256 = NULL, "
            "signing_key = NULL, signature = NULL"
        )
    target = tmp_path / "t"
    fail = host.wgsyncd("restore", "--to-dir", str(target), "--recovery-key", key_file, check=False)
    assert fail.returncode == 1 and "version 1: refused: unsigned" in fail.stderr
    assert "--allow-unsigned restores it anyway" in fail.stderr and not target.exists()
    out = host.wgsyncd("restore", "--to-dir", str(target), "--allow-unsigned", "--recovery-key", key_file)
    assert "WARNING: host host-signed version 1 is UNSIGNED" in out.stderr
    assert snapshot_files(target) == snapshot_files(host.conf_dir)

    (host.state_dir / signing.RECORD_FILE).unlink()  # the agent of before had no record
    out = host.wgsyncd("sync")
    assert "starting a new signed chain" in out.stderr and "unsigned" in out.stderr
    assert "tamper" not in out.stderr
    hist = history(host)
    assert [r["version"] for r in hist] == [2, 1] and hist[0]["chain_start"] and hist[0]["signing_key_id"]
    host.wgsyncd("restore", "--to-dir", str(tmp_path / "t2"), "--recovery-key", key_file)


# ---------------------------------------------------------------- the host's signing key file


def test_signing_key_file_made_once_0600_and_bad_files_are_clear_errors(host):
    path = host.state_dir / signing.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    original = path.read_bytes()
    host.wgsyncd("sync")
    assert path.read_bytes() == original  # never remade
    seed = original.decode().split("private = ")[1].strip()

    path.write_text("private = not-base64!!\n")
    fail = host.wgsyncd("sync", check=False)
    assert fail.returncode == 1 and f"{path}: malformed host signing key" in fail.stderr
    assert path.read_text() == "private = not-base64!!\n"
    path.write_bytes(original)
    path.chmod(0o644)
    fail = host.wgsyncd("sync", check=False)
    assert fail.returncode == 1 and "readable by others" in fail.stderr and seed not in fail.stderr
    path.unlink()
    path.mkdir()
    fail = host.wgsyncd("keys", "show-signing", check=False)
    assert fail.returncode == 1 and f"{path}: cannot read the host signing key" in fail.stderr
    assert seed not in fail.stdout + fail.stderr


# ---------------------------------------------------------------- the recovery key never on the host


def test_offline_restore_on_the_operators_machine_then_copy(host, recovery, tmp_path):
    """Item 6: the operator restores --to-dir on their own machine; the files are copied to the host."""
    key_file, _public = recovery
    before_files = snapshot_files(host.conf_dir)
    before = running(host.ifaces[host.name])
    host.ifaces[host.name].delete()
    shutil.rmtree(host.conf_dir)

    (tmp_path / "operator").mkdir()
    operator = RestoreHost(tmp_path / "operator", host.bed, host.dsn, "operator-laptop")
    operator.trusted_keys = host.trust_file()
    operator.write_config()
    staged = tmp_path / "operator" / "staged"
    operator.wgsyncd("restore", "--host", host.host_id, "--to-dir", str(staged), "--recovery-key", key_file)
    assert snapshot_files(staged) == before_files

    host.conf_dir.mkdir(mode=0o700)  # "scp staged/* host:/etc/wireguard/"
    for name, data in snapshot_files(staged).items():
        (host.conf_dir / name).write_bytes(data)
    host.ifaces[host.name] = host.bed.create(name=host.name, peers=0)
    host.ifaces[host.name].setconf(strip(host.conf_dir / f"{host.name}.conf"))
    assert running(host.ifaces[host.name]) == before
    private = secrets.load_recovery_private(key_file).reveal()
    for path in host.state_dir.rglob("*"):
        assert private not in path.read_text(errors="replace")


def test_apply_reads_the_recovery_key_from_stdin_or_a_systemd_credential(host, recovery, tmp_path):
    before = running(host.ifaces[host.name])
    text = (tmp_path / "recovery.key").read_text()
    for how in ("stdin", "credential"):
        host.ifaces[host.name].delete()
        host.ifaces[host.name] = host.bed.create(name=host.name, peers=0)
        if how == "stdin":
            out = host.wgsyncd("restore", "--apply", "--recovery-key", "-", input=text)
        else:
            creds = tmp_path / "creds"
            creds.mkdir(mode=0o700)
            (creds / "recovery-key").write_text(text)
            out = host.wgsyncd("restore", "--apply", env={"CREDENTIALS_DIRECTORY": str(creds)})
        assert "4 peers added" in out.stdout, out.stdout
        assert running(host.ifaces[host.name]) == before
    fail = host.wgsyncd("restore", "--apply", "--recovery-key", "-", input="garbage\n", check=False)
    assert fail.returncode == 1 and "stdin: no 'private = ...' line" in fail.stderr


def test_an_edited_document_is_never_carried_forward_and_signed(tmp_path, wg_bed, pg_cluster, recovery):
    """An incomplete cycle carries unreadable interfaces forward from the latest version, never an edit."""
    key_file, public = recovery
    h = RestoreHost(tmp_path, wg_bed, pg_cluster.create_database(), "host-carry")
    a, b = h.add_interface(3), h.add_interface(3)
    h.write_config(recovery_public=public)
    h.wgsyncd("sync")
    with psycopg.connect(h.dsn, autocommit=True) as conn:  # signature columns untouched
        conn.execute(
            "UPDATE config_versions SET doc = jsonb_set(doc, %s, %s)",
            (["interfaces", b, "post_up"], Jsonb([PWN])),
        )
    good_b = (h.conf_dir / f"{b}.conf").read_text()
    (h.conf_dir / f"{b}.conf").write_text(good_b + "\nthis line has no equals sign\n")
    h.specs[a].append(PeerSpec(public_key=random_key(), allowed_ips=("10.99.9.0/24",)))
    h.apply(a)
    part = h.wgsyncd("sync", check=False)
    assert part.returncode == 4
    assert "tamper: the document of this host's version 1 was edited" in part.stderr, part.stderr
    assert [r["version"] for r in history(h)] == [1]  # nothing signed on top of the edit

    (h.conf_dir / f"{b}.conf").write_text(good_b)
    h.wgsyncd("sync")
    assert [r["version"] for r in history(h)] == [2, 1]
    with psycopg.connect(h.dsn) as conn:
        doc = conn.execute("SELECT doc FROM config_versions WHERE version = 2").fetchone()[0]
    assert PWN not in json.dumps(doc)
    h.wgsyncd("restore", "--to-dir", str(tmp_path / "t"), "--recovery-key", key_file)
    assert snapshot_files(tmp_path / "t") == snapshot_files(h.conf_dir)
    args = ("--version", "1", "--to-dir", str(tmp_path / "t1"), "--recovery-key", key_file)
    fail = h.wgsyncd("restore", *args, check=False)
    assert fail.returncode == 1 and "its document does not match the signed hash" in fail.stderr


def test_a_long_running_agent_notices_a_forged_version_at_its_next_cycle(host, recovery):
    """The daemon's path: cycles on one connection, the writer's view current; a forgery between two."""
    from wgsyncd import config, cycle, store

    _key_file, public = recovery
    cfg = config.load(str(host.config))
    cfg.daemon.state_dir = str(host.state_dir)
    conn = store.connect(cfg.database)
    try:
        cycle.sync_once(cfg, conn)
        idle = cycle.sync_once(cfg, conn)  # the view is current now: the version fast path
        assert idle.rows_written == 0 and [r["version"] for r in history(host)] == [1]
        forge(host.dsn, host.host_id, host.name, public, "own-key", host.verify_key())
        cycle.sync_once(cfg, conn)
    finally:
        conn.close()
    assert [r["version"] for r in history(host)] == [3, 2, 1]
    assert "tamper: the latest config version is 2" in (_status_message(host.dsn, host.host_id) or "")
