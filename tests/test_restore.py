"""Restore (issue 5): real wireguard-go, real PostgreSQL, real files, the CLI in a subprocess.

A host syncs with a recovery key configured; then its interfaces and conf directory
are destroyed and `wgsyncd restore` must give back the files byte for byte and the
running state exactly as `wg show IF dump` showed it (handshakes and counters aside;
peers compared as a set because wireguard-go reorders them).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import time
from pathlib import Path

import psycopg
import pytest

from tests.beds.host import Host, parse_dump
from tests.beds.wireguard import PeerSpec, genkey, random_key
from wgsyncd import secrets, signing
from wgsyncd.restore import trust

pytestmark = pytest.mark.postgres

# wg-quick keys the plain e2e conf lacks: Table, SaveConfig=false, a second hook, inline comments
EXTRA_INTERFACE_LINES = [
    "Table = 1234",
    "PreUp = echo 'pre, up' >/dev/null",
    "PostUp = ip rule add fwmark 0x1234 table 1234 # inline comment, kept in the raw text",
]


class RestoreHost(Host):
    """The e2e Host plus every key wg-quick knows, preshared keys everywhere and a recovery key."""

    psk_every = 1

    def conf_text(self, name: str) -> str:
        text = super().conf_text(name)
        return text.replace("MTU = 1420\n", "MTU = 1420\n" + "\n".join(EXTRA_INTERFACE_LINES) + "\n", 1)

    def write_config(self, extra: str = "", recovery_public: str | None = None) -> None:
        super().write_config(extra)
        if recovery_public:
            self.config.write_text(f'recovery_public_key = "{recovery_public}"\n' + self.config.read_text())

    # the operator's trust file: each host's verify key is pinned after its first sync (as an
    # operator would at install time) and every `restore` is given the file
    trusted_keys: Path | None = None

    def wgsyncd(self, *args: str, check: bool = True, **kw):
        if args and args[0] == "restore" and "--trusted-keys" not in args:
            args = (*args, "--trusted-keys", str(self.trust_file()))
        proc = super().wgsyncd(*args, check=check, **kw)
        if (
            args
            and args[0] == "sync"
            and proc.returncode in (0, 4)
            and (self.state_dir / "signing.key").exists()
        ):
            self.pin()
        return proc

    def trust_file(self) -> Path:
        return self.trusted_keys or self.tmp / "trusted-keys"

    def verify_key(self) -> str:
        return signing.load_or_create(str(self.state_dir)).verify_key

    def pin(self) -> None:
        """`keys trust` for this host's current key (idempotent), in-process."""
        trust.add_pin(str(self.trust_file()), self.host_id, self.verify_key())

    def secrets(self) -> list[str]:
        """Every private and preshared key this host has (base64)."""
        out = list(self.keys.values())
        for specs in self.specs.values():
            out += [p.preshared_key for p in specs if p.preshared_key]
        return out


def running(iface) -> tuple[list[str], dict[str, tuple]]:
    """`wg show IF dump` without handshakes and counters: header, and peers by key."""
    head, peers = parse_dump(iface.dump())
    return head, {
        k: (p.preshared_key, p.endpoint, sorted(p.allowed_ips), p.keepalive) for k, p in peers.items()
    }


def snapshot_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture
def recovery(tmp_path) -> tuple[str, str]:
    """(private key file, public key) made by the CLI, as an operator would."""
    path = tmp_path / "recovery.key"
    keys = secrets.init_recovery(str(path))
    return str(path), keys.public


@pytest.fixture
def rhost(tmp_path, wg_bed, pg_cluster):
    return RestoreHost(tmp_path, wg_bed, pg_cluster.create_database(), "host-restore")


def history(h: Host, host_id: str | None = None) -> list[dict]:
    return json.loads(h.wgsyncd("history", "--json", *(["--host", host_id] if host_id else [])).stdout)


# ---------------------------------------------------------------- round trip


def test_round_trip_300_peers_files_byte_identical_and_dump_equal(rhost, recovery, tmp_path):
    key_file, public = recovery
    a = rhost.add_interface(200, disabled=PeerSpec(public_key=random_key()))
    b = rhost.add_interface(100)
    rhost.write_config(recovery_public=public)
    rhost.wgsyncd("sync")
    before_files = snapshot_files(rhost.conf_dir)
    before = {n: running(i) for n, i in rhost.ifaces.items()}
    assert sum(len(p) for _h, p in before.values()) == 300
    assert all(v[0] for _h, p in before.values() for v in p.values())  # every peer has a psk

    # the host is wiped: interfaces gone, conf directory gone
    for iface in list(rhost.ifaces.values()):
        iface.delete()
    shutil.rmtree(rhost.conf_dir)

    target = tmp_path / "restored-etc"
    t0 = time.monotonic()
    out = rhost.wgsyncd(
        "restore", "--host", rhost.host_id, "--to-dir", str(target), "--recovery-key", key_file
    )
    t_files = time.monotonic() - t0
    assert "version 1" in out.stdout
    assert snapshot_files(target) == before_files
    for name in before_files:
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o600
    assert not any(s in out.stdout + out.stderr for s in rhost.secrets())

    # same names, empty interfaces (a fresh key, no peers), then --apply
    for name in (a, b):
        rhost.ifaces[name] = rhost.bed.create(name=name, peers=0)
        assert running(rhost.ifaces[name])[1] == {}
    t0 = time.monotonic()
    out = rhost.wgsyncd("restore", "--host", rhost.host_id, "--apply", "--recovery-key", key_file)
    t_apply = time.monotonic() - t0
    assert f"{a} (uapi): device private_key; 200 peers added" in out.stdout, out.stdout
    for name in (a, b):
        assert running(rhost.ifaces[name]) == before[name]
    print(f"\nrestore of 300 peers: --to-dir {t_files:.2f} s, --apply {t_apply:.2f} s (CLI, wall clock)")

    # applying the same version again changes nothing and keeps every peer (no bounce)
    out = rhost.wgsyncd("restore", "--apply", "--recovery-key", key_file)
    assert "0 peers added, 0 updated, 0 removed" in out.stdout
    for name in (a, b):
        assert running(rhost.ifaces[name]) == before[name]


def test_conf_comments_restore_would_refuse_or_the_database_would_not_keep_still_sync_and_restore(
    rhost, recovery, tmp_path
):
    """An escape sequence, a bidi override, a 5,000-character line, a 1,500-character name and
    10,001 commented-out lines: wg-quick runs the file. Before, the database refused the name
    or the comments (every cycle failed) and restore refused the escapes (the backup was
    unrestorable). Now the rows hold an escaped, bounded copy and the file restores whole."""
    key_file, public = recovery
    name = rhost.add_interface(3)
    conf = rhost.conf_dir / f"{name}.conf"
    text = conf.read_text()
    first = text.index("# Name = ")
    odd = "# title \x1b]0;owned\x07 and \u202etxt.exe\n# " + "w" * 5000 + "\n# Name = " + "n" * 1500 + "\n"
    text = text[:first] + odd + text[first:].split("\n", 1)[1] + "# old peer line\n" * 10_001
    conf.write_text(text)
    rhost.write_config(recovery_public=public)
    out = rhost.wgsyncd("sync")
    assert "stored escaped or cut" in out.stderr and "10,001" not in out.stderr, out.stderr
    assert "comment lines past the database's bound left out" in out.stderr
    with psycopg.connect(rhost.dsn) as conn:
        rows = conn.execute(
            "SELECT name, cardinality(comments), length(array_to_string(comments, '')) FROM peers "
            "WHERE host_id = %s AND interface = %s ORDER BY length(name) DESC",
            (rhost.host_id, name),
        ).fetchall()
        status = conn.execute("SELECT status FROM sync_status WHERE host_id = %s", (rhost.host_id,))
        assert status.fetchall() == [("ok",)]
    long_name = rows[0][0]
    assert len(long_name) == 1024 and long_name.endswith("...")
    assert all(n and len(n) <= 1024 for n, _c, _l in rows)
    last = max(rows, key=lambda r: r[1])
    assert last[1] == 10_000 and last[2] <= 1_048_576
    target = tmp_path / "restored"
    rhost.wgsyncd("restore", "--host", rhost.host_id, "--to-dir", str(target), "--recovery-key", key_file)
    assert (target / f"{name}.conf").read_text() == text  # the file itself travels whole


# ---------------------------------------------------------------- point in time


def test_point_in_time_version_and_at_give_that_versions_dump_and_files(
    rhost, recovery, tmp_path, pg_cluster
):
    key_file, public = recovery
    a = rhost.add_interface(20)
    rhost.write_config(recovery_public=public)
    states = []

    def sync_and_record() -> None:
        rhost.wgsyncd("sync")
        states.append((snapshot_files(rhost.conf_dir), running(rhost.ifaces[a])))

    sync_and_record()
    rhost.wgsyncd("sync")  # idle: no new version
    assert [v["version"] for v in history(rhost)] == [1]

    specs = rhost.specs[a]
    del specs[3:5]
    specs += [PeerSpec(public_key=random_key(), preshared_key=random_key(), allowed_ips=("10.99.1.0/24",))]
    specs[0].allowed_ips = ("10.99.2.0/24",)
    rhost.apply(a)
    sync_and_record()
    specs[1].persistent_keepalive = 7
    specs[2].preshared_key = random_key()
    rhost.keys[a] = genkey()  # the interface key changes too
    rhost.apply(a)
    sync_and_record()
    hist = history(rhost)
    assert [v["version"] for v in hist] == [3, 2, 1]
    assert all(v["sealed"] and v["interfaces"] == 1 for v in hist)
    assert [v["peers"] for v in hist] == [19, 19, 20]

    v1_time = hist[-1]["created_at"]
    for selector in (["--version", "1"], ["--at", v1_time]):
        target = tmp_path / f"v1-{selector[0].strip('-')}"
        rhost.wgsyncd("restore", *selector, "--to-dir", str(target), "--recovery-key", key_file)
        assert snapshot_files(target) == states[0][0]
        rhost.wgsyncd("restore", *selector, "--apply", "--recovery-key", key_file)
        assert running(rhost.ifaces[a]) == states[0][1]
        rhost.wgsyncd("restore", "--version", "3", "--apply", "--recovery-key", key_file)
        assert running(rhost.ifaces[a]) == states[2][1]

    # restore version 2 onto "another machine": a different host_id in its config, --host names the source
    (tmp_path / "other").mkdir()
    other = RestoreHost(tmp_path / "other", rhost.bed, rhost.dsn, "host-other")
    other.trusted_keys = rhost.trust_file()
    other.write_config()
    target = tmp_path / "other" / "restored"
    other.wgsyncd(
        "restore",
        "--host",
        rhost.host_id,
        "--version",
        "2",
        "--to-dir",
        str(target),
        "--recovery-key",
        key_file,
    )
    assert snapshot_files(target) == states[1][0]

    # times before the first version, unknown versions and hosts are refused in one line
    fail = rhost.wgsyncd("restore", "--at", "2001-01-01T00:00:00Z", "--to-dir", str(target), check=False)
    assert fail.returncode == 1 and "no version at or before 2001-01-01" in fail.stderr
    assert "first version is from" in fail.stderr
    fail = rhost.wgsyncd("restore", "--version", "9", "--to-dir", str(target), check=False)
    assert fail.returncode == 1 and "no version 9 (versions 1..3)" in fail.stderr
    fail = rhost.wgsyncd("restore", "--host", "nope", "--to-dir", str(target), check=False)
    assert fail.returncode == 1 and "host nope: unknown host" in fail.stderr
    fail = rhost.wgsyncd("restore", "--interface", "wg-nope", "--to-dir", str(target), check=False)
    assert fail.returncode == 1 and "no interface wg-nope" in fail.stderr


# ---------------------------------------------------------------- the DB holds no key in clear


def _all_columns(conn) -> list[tuple[str, str, str]]:
    return conn.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
    ).fetchall()


def test_db_never_holds_a_private_or_preshared_key_in_clear(rhost, recovery):
    _key_file, public = recovery
    rhost.add_interface(40, disabled=PeerSpec(public_key=random_key(), preshared_key=random_key()))
    rhost.write_config(recovery_public=public)
    rhost.wgsyncd("sync")
    keys = rhost.secrets()
    raw = [base64.b64decode(k) for k in keys]
    forms = keys + [r.hex() for r in raw] + [base64.urlsafe_b64encode(r).decode() for r in raw]
    forms += [k.rstrip("=") for k in keys]
    scanned = 0
    with psycopg.connect(rhost.dsn) as conn:
        cols = _all_columns(conn)
        assert {"config_versions", "config_secrets"} <= {c[0] for c in cols}
        for table, column, dtype in cols:
            values = [r[0] for r in conn.execute(f'SELECT "{column}" FROM "{table}"')]
            for value in values:
                if value is None:
                    continue
                scanned += 1
                if isinstance(value, bytes | memoryview):
                    blob = bytes(value)
                    assert not any(r in blob for r in raw), f"{table}.{column}: raw key bytes"
                text = (
                    value.hex() if isinstance(value, bytes | memoryview) else json.dumps(value, default=str)
                )
                for form in forms:
                    assert form not in text, f"{table}.{column} ({dtype}) holds a key in clear"
        sealed = conn.execute("SELECT count(*) FROM config_secrets").fetchone()[0]
    assert sealed == 1 and scanned > 1000


# ---------------------------------------------------------------- refusals change nothing


@pytest.fixture
def synced(rhost, recovery, tmp_path):
    """A host synced with a recovery key, then changed, with a target dir holding an older file."""
    key_file, public = recovery
    a = rhost.add_interface(6)
    rhost.write_config(recovery_public=public)
    rhost.wgsyncd("sync")
    del rhost.specs[a][0]  # the running interface now differs from version 1
    rhost.apply(a)
    target = tmp_path / "target"
    target.mkdir()
    (target / f"{a}.conf").write_text("# an older file that must survive a refused restore\n")
    return rhost, a, key_file, target


def _unchanged(h: RestoreHost, name: str, target: Path, files: dict, dump: tuple) -> None:
    assert snapshot_files(target) == files
    assert running(h.ifaces[name]) == dump


def test_restore_refuses_without_wrong_or_tampered_key_and_changes_nothing(synced, tmp_path):
    h, a, key_file, target = synced
    files, dump = snapshot_files(target), running(h.ifaces[a])
    both = ("--to-dir", str(target), "--apply")

    fail = h.wgsyncd("restore", *both, check=False)
    assert fail.returncode == 1 and "impossible without the recovery private key" in fail.stderr
    _unchanged(h, a, target, files, dump)

    wrong = tmp_path / "wrong.key"
    secrets.init_recovery(str(wrong))
    fail = h.wgsyncd("restore", *both, "--recovery-key", str(wrong), check=False)
    assert fail.returncode == 1 and f"{wrong} is not the recovery key" in fail.stderr
    assert "version 1" in fail.stderr and len(fail.stderr.strip().splitlines()) == 1
    _unchanged(h, a, target, files, dump)

    fail = h.wgsyncd("restore", *both, "--recovery-key", str(tmp_path / "missing.key"), check=False)
    assert fail.returncode == 1 and "missing.key: cannot read recovery key" in fail.stderr
    _unchanged(h, a, target, files, dump)

    with psycopg.connect(h.dsn) as conn:  # flip one byte of the sealed blob
        conn.execute("UPDATE config_secrets SET sealed = set_byte(sealed, 60, get_byte(sealed, 60) # 1)")
    fail = h.wgsyncd("restore", *both, "--recovery-key", key_file, check=False)
    assert fail.returncode == 1 and "tampered" in fail.stderr and f"interface {a}" in fail.stderr
    _unchanged(h, a, target, files, dump)
    assert not any(s in fail.stderr for s in h.secrets())


def test_apply_refuses_when_an_interface_does_not_exist(synced):
    h, a, key_file, target = synced
    files = snapshot_files(target)
    h.ifaces.pop(a).delete()
    fail = h.wgsyncd("restore", "--apply", "--recovery-key", key_file, check=False)
    assert fail.returncode == 1 and f"interface {a} does not exist on this machine" in fail.stderr
    assert snapshot_files(target) == files


def test_dry_run_shows_a_redacted_diff_and_writes_nothing(synced):
    h, a, key_file, target = synced
    files, dump = snapshot_files(target), running(h.ifaces[a])
    out = h.wgsyncd("restore", "--to-dir", str(target), "--apply", "--dry-run", "--recovery-key", key_file)
    assert "would be replaced" in out.stdout
    assert "-# an older file that must survive a refused restore" in out.stdout
    assert "+PrivateKey = <secret fp:" in out.stdout and "+[Peer]" in out.stdout
    assert "1 peers added, 0 updated, 0 removed (dry run)" in out.stdout
    assert not any(s in out.stdout for s in h.secrets())
    _unchanged(h, a, target, files, dump)
    assert [p.name for p in target.iterdir()] == [f"{a}.conf"]  # no temp file, no backup

    # the real run replaces the file and keeps the old one as a backup
    h.wgsyncd("restore", "--to-dir", str(target), "--recovery-key", key_file)
    backups = [p for p in target.iterdir() if ".wgsyncd-backup-" in p.name]
    assert len(backups) == 1 and backups[0].read_bytes() == files[f"{a}.conf"]


def test_apply_via_wg_syncconf_backend(synced):
    """The kernel path (`wg syncconf`) run against wireguard-go, which `wg` drives the same way."""
    h, a, key_file, _target = synced
    with psycopg.connect(h.dsn) as conn:
        (doc,) = conn.execute("SELECT doc FROM config_versions WHERE version = 1").fetchone()
    h.wgsyncd("restore", "--apply", "--apply-via", "wg", "--recovery-key", key_file)
    _head, peers = running(h.ifaces[a])
    assert set(peers) == {p["public_key"] for p in doc["interfaces"][a]["peers"]}


# ---------------------------------------------------------------- no recovery key configured


def test_without_recovery_key_status_warns_and_restore_says_keys_are_lost(rhost, tmp_path):
    a = rhost.add_interface(5)
    rhost.write_config()
    rhost.wgsyncd("sync")
    st = rhost.wgsyncd("status", "--host", rhost.host_id)
    assert "restore will be incomplete: no recovery_public_key configured" in st.stderr
    assert history(rhost)[0]["sealed"] is False
    target = tmp_path / "t"
    fail = rhost.wgsyncd("restore", "--to-dir", str(target), check=False)
    assert fail.returncode == 1 and "secrets were not stored" in fail.stderr
    assert not target.exists()
    out = rhost.wgsyncd("restore", "--to-dir", str(target), "--allow-missing-secrets")
    assert "restored without keys" in out.stdout
    text = (target / f"{a}.conf").read_text()
    assert "PrivateKey" not in text.replace("# PrivateKey was not stored", "")
    from wgsyncd.sources.conffiles import parse_conf

    parsed = parse_conf(text, str(target / f"{a}.conf"))
    assert set(parsed.peers) == {p.public_key for p in rhost.specs[a]}
    assert parsed.post_up == ("ip rule add fwmark 0x1234 table 1234",
                              "iptables -A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT")  # fmt: skip
    assert parsed.table == "1234" and parsed.mtu == 1420


# ---------------------------------------------------------------- wgrest


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_to_wgrest_recreates_peers(rhost, recovery, make_wgrest, api):
    key_file, public = recovery
    a = rhost.add_interface(30, disabled=PeerSpec(public_key=random_key()))
    rhost.write_config(recovery_public=public)
    rhost.wgsyncd("sync")
    from wgsyncd.sources import kernel as kernel_source

    wanted = kernel_source.parse_wg_dump(rhost.ifaces[a].dump(), a)[a]
    server = make_wgrest(api, token="tok-restore")
    server.add_device(a)
    kept = list(wanted.peers.values())[:20]
    for i, p in enumerate(kept):
        ips = ["10.77.0.1/32"] if i == 0 else list(p.allowed_ips or ())  # one peer drifted
        server.add_peer(a, p.public_key, allowed_ips=ips, keepalive=p.persistent_keepalive or 0,
                        endpoint=p.endpoint or "",
                        preshared_key=p.preshared_key.reveal() if p.preshared_key else "")  # fmt: skip
    extra = server.add_peer(a, allowed_ips=["10.88.0.1/32"])
    token = rhost.tmp / "token"
    token.write_text("tok-restore\n")
    out = rhost.wgsyncd(
        "restore", "--to-wgrest", server.url, "--token-file", str(token), "--recovery-key", key_file
    )
    assert f"{a} (wgrest): 10 peers created, 1 updated, 1 deleted" in out.stdout, out.stdout
    dev = server.devices[a]
    assert set(dev.peers) == set(wanted.peers) and extra.public_key not in dev.peers
    for pub, p in wanted.peers.items():
        got = dev.peers[pub]
        assert sorted(got.allowed_ips) == sorted(p.allowed_ips or ())
        assert got.preshared_key == (p.preshared_key.reveal() if p.preshared_key else "")
        assert got.keepalive == (p.persistent_keepalive or 0)
        assert got.endpoint == (p.endpoint or "")
    assert all(r.authorization == "Bearer tok-restore" for r in server.requests)
    again = rhost.wgsyncd("restore", "--to-wgrest", server.url, "--token-file", str(token),
                          "--recovery-key", key_file)  # fmt: skip
    assert "0 peers created, 0 updated, 0 deleted" in again.stdout


def test_to_wgrest_unknown_device_refuses_before_writing(rhost, recovery, make_wgrest):
    key_file, public = recovery
    rhost.add_interface(3)
    rhost.write_config(recovery_public=public)
    rhost.wgsyncd("sync")
    server = make_wgrest("v1")
    fail = rhost.wgsyncd("restore", "--to-wgrest", server.url, "--recovery-key", key_file, check=False)
    assert fail.returncode == 1 and "wgrest device" in fail.stderr and "HTTP 404" in fail.stderr
    assert server.paths("POST") == [] and server.paths("DELETE") == []


def test_keys_init_recovery_cli(rhost, tmp_path):
    rhost.write_config()
    path = tmp_path / "op.key"
    out = rhost.wgsyncd("keys", "init-recovery", str(path))
    line = next(x for x in out.stdout.splitlines() if x.startswith("recovery_public_key = "))
    public = line.split('"')[1]
    assert secrets.recovery_public_of(secrets.load_recovery_private(str(path))) == public
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = rhost.wgsyncd("keys", "init-recovery", str(path), check=False)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr


# ---------------------------------------------------------------- partial cycles


def test_partial_cycle_carries_the_unreadable_interface_forward(rhost, recovery, tmp_path):
    key_file, public = recovery
    a = rhost.add_interface(8)
    b = rhost.add_interface(8)
    rhost.write_config(recovery_public=public)
    rhost.wgsyncd("sync")
    v1_files = snapshot_files(rhost.conf_dir)

    # b's conf becomes unreadable while a really changes: v2 = a's change + b as in v1
    good_b = (rhost.conf_dir / f"{b}.conf").read_text()
    (rhost.conf_dir / f"{b}.conf").write_text(good_b + "\nthis line has no equals sign\n")
    rhost.specs[a].append(PeerSpec(public_key=random_key(), allowed_ips=("10.99.5.0/24",)))
    rhost.apply(a)
    part = rhost.wgsyncd("sync", check=False)
    assert part.returncode == 4, part.stdout + part.stderr
    hist = history(rhost)
    assert [v["version"] for v in hist] == [2, 1] and hist[0]["sealed"]
    with psycopg.connect(rhost.dsn) as conn:
        docs = dict(conn.execute("SELECT version, doc FROM config_versions").fetchall())
    # b as in v1; the broken text itself is sealed beside it (issue 16 item 9), not restored
    carried = dict(docs[2]["interfaces"][b])
    assert carried.pop("unparsed_conf")["conf_path"].endswith(f"/{b}.conf")
    assert carried == docs[1]["interfaces"][b]
    assert len(docs[2]["interfaces"][a]["peers"]) == 9

    # another partial cycle with nothing else changed makes no version
    rhost.wgsyncd("sync", check=False)
    assert len(history(rhost)) == 2

    target = tmp_path / "v2"
    rhost.wgsyncd("restore", "--version", "2", "--to-dir", str(target), "--recovery-key", key_file)
    got = snapshot_files(target)
    assert got[f"{b}.conf"] == v1_files[f"{b}.conf"]  # the good file, not the broken one
    assert got[f"{a}.conf"] == (rhost.conf_dir / f"{a}.conf").read_bytes()


# ---------------------------------------------------------------- wgrest v1 peer private keys


def test_wgrest_v1_peer_private_keys_are_sealed_and_recreated(rhost, recovery, make_wgrest, tmp_path):
    """wgrest v1 keeps peers' private keys in its data dir: sealed in the DB, handed back on restore."""
    from tests.beds.wgrest_server import write_v1_data_dir
    from tests.beds.wireguard import pubkey
    from wgsyncd.sources import kernel as kernel_source

    key_file, public = recovery
    privs = [genkey() for _ in range(4)]
    specs = [
        PeerSpec(public_key=pubkey(k), allowed_ips=(f"10.66.0.{i + 1}/32",)) for i, k in enumerate(privs)
    ]
    iface = rhost.bed.create(peers=specs)
    name = iface.name
    rhost.ifaces[name] = iface
    source = make_wgrest("v1", data_dir=tmp_path / "wgrest-src")
    source.load_state(kernel_source.parse_wg_dump(iface.dump(), name).values())
    write_v1_data_dir(tmp_path / "wgrest-src", privs)
    rhost.wgrest_url = source.url
    rhost.write_config(recovery_public=public)
    rhost.config.write_text(
        rhost.config.read_text().replace('data_dir = ""', f'data_dir = "{tmp_path / "wgrest-src"}"')
    )
    rhost.wgsyncd("sync")
    with psycopg.connect(rhost.dsn) as conn:
        rows = conn.execute("SELECT count(*) FROM peers WHERE has_private_key").fetchone()[0]
        dump = "\n".join(
            str(r) for r in conn.execute("SELECT v.doc, s.sealed FROM config_versions v, config_secrets s")
        )
    assert rows == 4 and not any(k in dump for k in privs)

    target = make_wgrest("v1", data_dir=tmp_path / "wgrest-new")
    target.add_device(name)
    rhost.wgsyncd("restore", "--to-wgrest", target.url, "--recovery-key", key_file)
    assert set(target.devices[name].peers) == {s.public_key for s in specs}
    stored = sorted(p.read_text() for p in (tmp_path / "wgrest-new" / "v1").glob("*.conf"))
    assert stored == sorted(f"PrivateKey = {k}\n" for k in privs)


def test_two_targets_refuse_before_either_writes(synced):
    """--to-dir with --apply: the apply target's refusal must come before any conf file changes.

    Each target checked itself before its own first write, but to_dir ran (and wrote)
    before apply found that the interface does not exist: a half-done restore.
    """
    h, a, key_file, target = synced
    files = snapshot_files(target)
    h.ifaces.pop(a).delete()
    fail = h.wgsyncd("restore", "--to-dir", str(target), "--apply", "--recovery-key", key_file, check=False)
    assert fail.returncode == 1 and f"interface {a} does not exist on this machine" in fail.stderr
    assert snapshot_files(target) == files, "a refused restore wrote conf files"
