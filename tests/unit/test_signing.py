"""Host signing keys, the signed message, the agent's judgement of the latest row, the trust file."""

from __future__ import annotations

import base64
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from nacl.signing import SigningKey

from wgsyncd import secrets, signing
from wgsyncd.restore import RestoreError, trust

T0 = datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=UTC)


def _signed(key: signing.HostKey, version: int, prev: str, **kw) -> signing.Signed:
    fields = signing.Signed(
        kw.pop("host_id", "h1"),
        version,
        prev,
        kw.pop("created_at", T0 + timedelta(minutes=version)),
        kw.pop("content_sha256", f"c{version}"),
        kw.pop("doc_sha256", f"d{version}"),
        kw.pop("sealed", {"wg0": f"b{version}"}),
        kw.pop("recovery_key_fp", "fp"),
        key.verify_key,
    )
    return replace(fields, signature=key.sign(fields.message()))


@pytest.fixture
def key(tmp_path) -> signing.HostKey:
    return signing.load_or_create(str(tmp_path / "state"))


def test_key_is_made_once_0600_and_never_overwritten(tmp_path):
    state = tmp_path / "state"
    first = signing.load_or_create(str(state))
    path = state / signing.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(state.stat().st_mode) == 0o700
    assert signing.load_or_create(str(state)).verify_key == first.verify_key
    text = path.read_text()
    path.write_text("garbage\n")
    with pytest.raises(signing.SigningError, match=r"signing.key: malformed host signing key file"):
        signing.load_or_create(str(state))
    assert path.read_text() == "garbage\n"
    path.write_text(text.replace("private = ", "private = x"))
    with pytest.raises(signing.SigningError, match="not a 32-byte base64 seed") as err:
        signing.load_or_create(str(state))
    assert text.split("private = ")[1].strip() not in str(err.value)
    assert text.split("private = ")[1].strip() not in repr(first)  # no key material in a repr


def test_every_signed_field_is_bound(key):
    base = _signed(key, 3, "a" * 64)
    assert base.signed_by(key.verify_key)
    assert base.message().startswith(signing.DOMAIN)
    # the same instant in another zone is the same message
    other_zone = replace(base, created_at=base.created_at.astimezone(timezone(timedelta(hours=5))))
    assert other_zone.message() == base.message() and other_zone.signed_by(key.verify_key)
    changes = {
        "host_id": "h2",
        "version": 4,
        "prev": "b" * 64,
        "created_at": base.created_at + timedelta(microseconds=1),
        "content_sha256": "x",
        "doc_sha256": "x",
        "sealed": {"wg0": "other blob"},
        "recovery_key_fp": "other",
    }
    for name, value in changes.items():
        moved = replace(base, **{name: value})
        assert moved.link() != base.link(), name
        assert not moved.signed_by(key.verify_key), name
    other = signing.HostKey("x", base64.b64encode(bytes(SigningKey.generate().verify_key)).decode(), None)  # type: ignore[arg-type]
    assert not base.signed_by(other.verify_key)
    assert not replace(base, signature="!!").signed_by(key.verify_key)


def test_every_field_of_the_head_is_bound_and_its_domain_is_its_own(key, tmp_path):
    signer = signing.Signer(key, str(tmp_path), "h1")
    head = signer.head(3, "a" * 64)
    assert head.signed_by(key.verify_key) and head.message().startswith(signing.HEAD_DOMAIN)
    assert (head.host_id, head.version, head.link) == ("h1", 3, "a" * 64)
    changes = {"host_id": "h2", "version": 4, "link": "b" * 64, "at": head.at + timedelta(microseconds=1)}
    for name, value in changes.items():
        assert not replace(head, **{name: value}).signed_by(key.verify_key), name
    # a version's signature never passes as a head's, nor the other way round
    version = _signed(key, 3, "a" * 64)
    assert not signing.verify(key.verify_key, head.message(), version.signature)
    assert not signing.verify(key.verify_key, version.message(), head.signature)
    assert not replace(head, signature=None).signed_by(key.verify_key)


def test_judge_the_latest_row(key, tmp_path):
    v1 = _signed(key, 1, signing.GENESIS)
    v2 = _signed(key, 2, v1.link())
    last1 = signing.LastSigned(1, v1.link())
    # fresh host; own row without a record; own row as recorded; committed but record lost
    assert signing.judge(key, None, None) == signing.Verdict(False, signing.GENESIS)
    assert signing.judge(key, None, v2) == signing.Verdict(True, v2.link())
    assert signing.judge(key, signing.LastSigned(2, v2.link()), v2).ours
    assert signing.judge(key, last1, v2) == signing.Verdict(True, v2.link())
    # a reinstalled host (another key) and unsigned legacy rows: a new segment, no alarm
    other = signing.load_or_create(str(tmp_path / "other"))
    foreign = _signed(other, 2, v1.link())
    verdict = signing.judge(key, None, foreign)
    assert not verdict.ours and verdict.prev == signing.GENESIS and verdict.problem is None
    assert "reinstalled host" in (verdict.note or "")
    assert "unsigned" in (signing.judge(key, None, replace(v2, signature=None)).note or "")
    # with a record: forged, replayed, rolled back, deleted -> tamper lines
    for latest, words in [
        (foreign, "not validly signed by this host's key"),
        (replace(v1, version=3), "not validly signed"),
        (replace(v2, signature=None), "unsigned"),
        (v1, "an older or out-of-chain version"),
        (None, "no config versions left"),
    ]:
        verdict = signing.judge(key, signing.LastSigned(2, v2.link()), latest)
        assert not verdict.ours and verdict.prev is None
        assert verdict.problem and verdict.problem.startswith("tamper: ") and words in verdict.problem


def test_local_record_is_per_host_and_survives_damage(tmp_path):
    state = str(tmp_path)
    assert signing.read_record(state, "h1") is None
    signing.write_record(state, "h1", signing.LastSigned(3, "a" * 64))
    signing.write_record(state, "h2", signing.LastSigned(1, "b" * 64))
    assert signing.read_record(state, "h1") == signing.LastSigned(3, "a" * 64)
    assert signing.read_record(state, "h2") == signing.LastSigned(1, "b" * 64)
    assert [p.name for p in tmp_path.iterdir()] == [signing.RECORD_FILE]  # no temp file left
    (tmp_path / signing.RECORD_FILE).write_text("{half")
    assert signing.read_record(state, "h1") is None
    signing.write_record(state, "h1", signing.LastSigned(4, "c" * 64))
    assert signing.read_record(state, "h1") == signing.LastSigned(4, "c" * 64)


def test_signer_records_only_after_commit(tmp_path):
    signers: dict = {}  # the daemon's memo.Memo.signers
    signer = signing.signer_for(str(tmp_path / "s"), "h1", signers)
    assert signing.signer_for(str(tmp_path / "s"), "h1", signers) is signer
    signer.pending = signing.LastSigned(1, "a" * 64)
    signer.begin()  # the transaction rolled back; a new cycle starts
    signer.committed()
    assert signing.read_record(str(tmp_path / "s"), "h1") is None
    signer.pending = signing.LastSigned(1, "a" * 64)
    signer.committed()
    assert signing.read_record(str(tmp_path / "s"), "h1") == signer.last == signing.LastSigned(1, "a" * 64)


# ---------------------------------------------------------------- the operator's trust file


def _vk() -> str:
    return base64.b64encode(bytes(SigningKey.generate().verify_key)).decode()


def test_trust_file_pins_several_keys_per_host(tmp_path):
    path = str(tmp_path / "trusted")
    a, b, c = _vk(), _vk(), _vk()
    assert trust.add_pin(path, "vpn-1", a, "installed 2026-11")
    assert trust.add_pin(path, "vpn-1", b)
    assert not trust.add_pin(path, "vpn-1", a)
    assert trust.add_pin(path, "vpn-2", c)
    pins = trust.read_pins(path)
    assert pins.of("vpn-1") == (a, b) and pins.of("vpn-2") == (c,) and pins.of("vpn-3") == ()
    lines = (tmp_path / "trusted").read_text().splitlines()
    assert lines[0].startswith("#") and lines[1] == f"vpn-1 {a} installed 2026-11"
    for host_id in ("", "two words", "#x"):
        with pytest.raises(RestoreError, match="cannot be pinned"):
            trust.add_pin(path, host_id, a)
    with pytest.raises(RestoreError, match="verify key"):
        trust.add_pin(path, "vpn-1", "AAAA")
    with pytest.raises(RestoreError, match="one line"):
        trust.add_pin(path, "vpn-1", _vk(), "a\nvpn-1 evil")


def test_trust_file_errors_name_file_and_line(tmp_path):
    path = tmp_path / "trusted"
    path.write_text(f"# comment\n\nvpn-1 {_vk()} ok\nvpn-2\n")
    with pytest.raises(RestoreError, match=rf"{path}:4: expected 'host_id verify_key"):
        trust.read_pins(str(path))
    path.write_text("vpn-1 not-a-key\n")
    with pytest.raises(RestoreError, match=rf"{path}:1: not a base64 Ed25519 verify key"):
        trust.read_pins(str(path))
    with pytest.raises(RestoreError, match="cannot read the trusted keys file"):
        trust.read_pins(str(tmp_path / "missing"))


def test_chain_problems(key, tmp_path):
    """One pass over a host's rows: chain starts, links, pins, rotation."""
    path = str(tmp_path / "trusted")
    trust.add_pin(path, "h1", key.verify_key)
    v1 = _signed(key, 1, signing.GENESIS)
    v2 = _signed(key, 2, v1.link())
    v3 = _signed(key, 3, v2.link())
    pins = trust.read_pins(path)
    assert trust.problems([v1, v2, v3], pins) == {1: None, 2: None, 3: None}
    found = trust.problems([v1, v3], pins)  # v2 deleted
    assert found[1] is None and "off the chain" in (found[3] or "")
    replayed = replace(v1, version=4)
    assert "does not verify" in (trust.problems([v1, v2, v3, replayed], pins)[4] or "")
    new = signing.load_or_create(str(tmp_path / "reinstalled"))
    v4 = _signed(new, 4, signing.GENESIS)
    assert "not pinned" in (trust.problems([v1, v2, v3, v4], pins)[4] or "")
    trust.add_pin(path, "h1", new.verify_key)
    assert trust.problems([v1, v2, v3, v4], trust.read_pins(path)) == dict.fromkeys((1, 2, 3, 4))
    assert "no key is pinned for host h2" in (trust.problems([replace(v1, host_id="h2")], pins)[1] or "")


def test_a_retired_key_vouches_for_what_it_signed_up_to_its_bound_only(key, tmp_path):
    """The old key leaked: versions 1..2 it signed stay trusted; a version 3 it signed
    (the thief's, chained onto genuine 2) is refused, and so is what chains onto that."""
    path = str(tmp_path / "trusted")
    trust.add_pin(path, "h1", key.verify_key, "the old disk")
    new = signing.load_or_create(str(tmp_path / "reinstalled"))
    trust.add_pin(path, "h1", new.verify_key)
    v1 = _signed(key, 1, signing.GENESIS)
    v2 = _signed(key, 2, v1.link())
    forged = _signed(key, 3, v2.link())
    onto = _signed(new, 4, forged.link())
    rows = [v1, v2, forged, onto]
    assert trust.problems(rows, trust.read_pins(path)) == dict.fromkeys((1, 2, 3, 4))  # the attack, unretired
    assert trust.retire_pin(path, "h1", key.verify_key, 2) is None
    pins = trust.read_pins(path)
    found = trust.problems(rows, pins)
    assert found[1] is None and found[2] is None
    assert f"which {path} retires after version 2" in (found[3] or "")
    assert "off the chain" in (found[4] or "")
    assert pins.of("h1") == (key.verify_key, new.verify_key) and pins.for_head("h1") == (new.verify_key,)
    lines = (tmp_path / "trusted").read_text().splitlines()
    assert lines[1] == f"h1 {key.verify_key} retired-after=2 the old disk"
    assert trust.retire_pin(path, "h1", key.verify_key, 0) == 2  # the comment stays; the bound changes
    assert (tmp_path / "trusted").read_text().splitlines()[
        1
    ] == f"h1 {key.verify_key} retired-after=0 the old disk"
    assert "retires after version 0" in (trust.problems(rows, trust.read_pins(path))[1] or "")


def test_a_retired_key_signs_nothing_after_its_successor_started(key, tmp_path):
    """The new key's chain numbered inside 1..N: what the old key signs above the new key's
    first version is refused whatever N says; below it, N still rules."""
    path = str(tmp_path / "trusted")
    new = signing.load_or_create(str(tmp_path / "reinstalled"))
    trust.add_pin(path, "h1", key.verify_key)
    trust.add_pin(path, "h1", new.verify_key)
    trust.retire_pin(path, "h1", key.verify_key, 9)
    old1 = _signed(key, 1, signing.GENESIS)
    new2 = _signed(new, 2, signing.GENESIS)
    old3 = _signed(key, 3, new2.link())
    found = trust.problems([old1, new2, old3], trust.read_pins(path))
    assert found[1] is None and found[2] is None
    assert "already signed version 2: a retired key" in (found[3] or "")
    # another host's current key does not count against h1's retired key
    trust.add_pin(path, "h2", new.verify_key)
    rows = [_signed(new, 1, signing.GENESIS, host_id="h2"), _signed(key, 3, signing.GENESIS)]
    assert trust.problems(rows, trust.read_pins(path))[3] is None


def test_retirement_errors_and_the_strictest_line_wins(key, tmp_path):
    path = tmp_path / "trusted"
    other = _vk()
    path.write_text(f"h1 {key.verify_key} retired-after=5\nh1 {key.verify_key} pinned again\n")
    assert trust.read_pins(str(path)).retired_after("h1", key.verify_key) == 5  # not undone by line 2
    path.write_text(f"h1 {key.verify_key} retired-after=9\nh1 {key.verify_key} retired-after=3 x\n")
    assert trust.read_pins(str(path)).retired_after("h1", key.verify_key) == 3
    for bad in ("-1", "", "x", "2.0", "\uff11"):
        path.write_text(f"h1 {key.verify_key} retired-after={bad} c\n")
        with pytest.raises(RestoreError, match=rf"{path}:1: retired-after=.*expected a version number"):
            trust.read_pins(str(path))
    path.write_text(f"h1 {key.verify_key}\n")
    with pytest.raises(RestoreError, match="is not pinned for host h2: nothing to retire"):
        trust.retire_pin(str(path), "h2", key.verify_key, 1)
    with pytest.raises(RestoreError, match="is not pinned for host h1"):
        trust.retire_pin(str(path), "h1", other, 1)
    for bad in (-1, 10**10):  # 10**10 was written, then refused by every later read
        with pytest.raises(RestoreError, match=rf"--after-version {bad}: expected a version number"):
            trust.retire_pin(str(path), "h1", key.verify_key, bad)
    assert path.read_text() == f"h1 {key.verify_key}\n"  # nothing written by a refusal


@pytest.mark.parametrize(
    "tail",
    [
        "pinned 2026-11-27; retired-after=3",
        "Retired-After=3",
        "retired_after=3",
        "retired-after: 3",
        "retired-after 3",
        "# retired-after=3",
        "retired\u2011after=3",
        "retired-after=5 retired-after=2",
    ],
)
def test_a_retirement_the_parser_would_read_as_a_comment_is_an_error(key, tmp_path, tail):
    """Review finding: each of these was read as a comment, so the key stayed fully trusted."""
    path = tmp_path / "trusted"
    path.write_text(f"# header\nh1 {key.verify_key} {tail}\n")
    with pytest.raises(
        RestoreError, match=rf"{path}:2: .* in the comment retires nothing: write 'retired-after=N'"
    ):
        trust.read_pins(str(path))
    # what the operator may still write in a comment
    for fine in ("retired: the old disk was lost", "to be retired after the migration", "retire 2027"):
        path.write_text(f"h1 {key.verify_key} retired-after=4 {fine}\nh2 {key.verify_key} {fine}\n")
        pins = trust.read_pins(str(path))
        assert (
            pins.retired_after("h1", key.verify_key) == 4 and pins.retired_after("h2", key.verify_key) is None
        )
    for fine in ("retired after the 2026-11-27 theft", "Retired After 1 leak"):  # the field is there
        path.write_text(f"h1 {key.verify_key} retired-after=4 {fine}\nh2 {key.verify_key}\n")
        pins = trust.read_pins(str(path))
        assert (
            pins.retired_after("h1", key.verify_key) == 4 and pins.retired_after("h2", key.verify_key) is None
        )
    for comment in ("retired-after=3", "old; Retired after 3"):
        with pytest.raises(RestoreError, match="comment: must not look like a retirement"):
            trust.add_pin(str(tmp_path / "new"), "h1", key.verify_key, comment)
    assert not (tmp_path / "new").exists()


def test_retire_pin_keeps_every_other_line(key, tmp_path):
    """Header, blank lines, other hosts, CRLF line ends, a second line of the same pin."""
    path = tmp_path / "trusted"
    other = _vk()
    path.write_bytes(
        f"# header\r\n\r\nh2 {key.verify_key} other host\r\nh1 {key.verify_key}  old disk\r\n"
        f"h1 {other}\r\n\th1 {key.verify_key}\r\n".encode()
    )
    assert trust.retire_pin(str(path), "h1", key.verify_key, 7) is None
    assert path.read_text().splitlines() == [
        "# header",
        "",
        f"h2 {key.verify_key} other host",
        f"h1 {key.verify_key} retired-after=7 old disk",
        f"h1 {other}",
        f"h1 {key.verify_key} retired-after=7",
    ]
    pins = trust.read_pins(str(path))
    assert pins.retired_after("h2", key.verify_key) is None and pins.for_head("h1") == (other,)


def test_retire_pin_writes_through_a_link_and_keeps_the_mode(key, tmp_path):
    """Review finding: the file kept on an offline medium, linked from where the operator works:
    the retirement replaced the link with a copy and the real file still trusted the key."""
    real = tmp_path / "usb" / "trusted-keys"
    real.parent.mkdir()
    real.write_text(f"h1 {key.verify_key}\n")
    real.chmod(0o600)
    link = tmp_path / "trusted-keys"
    link.symlink_to(real)
    trust.retire_pin(str(link), "h1", key.verify_key, 1)
    assert link.is_symlink() and stat.S_IMODE(real.stat().st_mode) == 0o600
    assert trust.read_pins(str(real)).retired_after("h1", key.verify_key) == 1
    assert trust.add_pin(str(link), "h2", key.verify_key)
    assert link.is_symlink() and trust.read_pins(str(real)).of("h2") == (key.verify_key,)


def test_recovery_key_text_from_stdin_forms(tmp_path):
    made = secrets.init_recovery(str(tmp_path / "r.key"))
    text = (tmp_path / "r.key").read_text()
    assert secrets.parse_recovery_private(text, "stdin").reveal() == made.private.reveal()
    bare = made.private.reveal() + "\n"
    assert secrets.parse_recovery_private(bare, "stdin").reveal() == made.private.reveal()
    with pytest.raises(secrets.SealError, match=r"stdin: no 'private = \.\.\.' line"):
        secrets.parse_recovery_private("nothing here\n", "stdin")
