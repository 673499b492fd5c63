"""What restore trusts: the host keys the operator pinned, and the chain they signed.

Why: everything in the database can be written by whoever owns it, including the
``signing_key`` column beside a signature and the database pins of
``host_signing_keys``. The only trust anchor is a file the operator keeps with the
recovery key (``--trusted-keys FILE``), one pin per line::

    # host_id  verify_key (base64 Ed25519)  [retired-after=N]  [comment]
    vpn-1  q2c1...=  pinned 2026-11-27 from `wgsyncd keys show-signing`

Several lines for one host are several valid keys (a reinstalled host makes a new
key; old versions stay restorable while the old key stays pinned). A key that may
have leaked is *retired* rather than unpinned (``wgsyncd keys retire``)::

    vpn-1  q2c1...=  retired-after=41  pinned 2026-11-27; retired: the old disk was lost

It still vouches for the versions it signed up to 41 (they stay restorable), but a
version numbered above 41 that it signed is refused, and a head it signed counts for
nothing: whoever holds the leaked key cannot make restore's "latest" theirs. A version is
restored only when (:func:`check`): it is signed by a pinned key of its host over its
own number, time, hashes and chain link; its document hashes to the signed value;
and following ``prev`` links leads, through versions that are all validly signed by
pinned keys, to a chain start. Unsigned versions (written before signing existed) are
refused unless the operator says ``--allow-unsigned``, and even then only when no
signed version precedes them (an agent that signs never writes an unsigned version).
"""

from __future__ import annotations

import hashlib
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wgsyncd.atomicfile import write_atomic
from wgsyncd.restore import freshness
from wgsyncd.restore.errors import RestoreError

if TYPE_CHECKING:
    from datetime import datetime

    from wgsyncd.signing import SignedHead

UNSIGNED = "unsigned (written before versions were signed, or not by the host's agent)"
TRUST_HEADER = "# wgsyncd trusted host signing keys: host_id verify_key [retired-after=N] [comment]\n"


RETIRED = re.compile(r"retired-after=(\S*)")
# a retirement mis-spelled or misplaced (in the comment) would be read as a comment and
# silently not apply: "Retired-After=3", "retired_after: 3", "; retired-after=3", a second one
MISPLACED = re.compile(r"retire\w*[\W_]{0,3}after\W{0,3}\d", re.IGNORECASE)


@dataclass(frozen=True)
class Pins:
    """host_id -> verify keys, read from the operator's trust file at ``path``.

    ``retired``: (host_id, key) -> the last version number that key may sign.
    """

    path: str
    keys: dict[str, tuple[str, ...]]
    retired: dict[tuple[str, str], int] = field(default_factory=dict)

    def of(self, host_id: str) -> tuple[str, ...]:
        """The keys pinned for ``host_id`` (empty when none), retired ones included."""
        return self.keys.get(host_id, ())

    def retired_after(self, host_id: str, key: str) -> int | None:
        """The last version ``key`` may sign for ``host_id``; None when it is not retired."""
        return self.retired.get((host_id, key))

    def for_head(self, host_id: str) -> tuple[str, ...]:
        """The keys whose signed head counts: pinned and not retired."""
        return tuple(k for k in self.of(host_id) if (host_id, k) not in self.retired)

    def trusted_elsewhere(self, host_id: str, key: str) -> list[str]:
        """The other hosts that pin ``key`` unretired: one state directory can sign for several
        host_ids (a renamed host), and retiring a leaked key for one leaves it trusted there."""
        return sorted(
            h for h, ks in self.keys.items() if h != host_id and key in ks and (h, key) not in self.retired
        )


def _split_pin_line(line: str) -> tuple[str, str, str | None, str]:
    """(host_id, verify_key, retired-after value or None, comment) of a pin line with 2+ fields."""
    host_id, key, *rest = line.split(None, 2)
    tail = rest[0] if rest else ""
    found = RETIRED.match(tail)
    if found is None:
        return host_id, key, None, tail
    return host_id, key, found.group(1), tail[found.end() :].strip()


def _comment_problem(comment: str, retired: bool = False) -> str | None:
    """Why a pin line's comment would hide a retirement the operator meant, or None.

    ``retired``: the line has its retired-after field; then only a second one is an error
    (the comment may say "retired after 2026-11-27 theft")."""
    wrong = re.search(r"retired-after=\S*", comment, re.IGNORECASE) if retired else MISPLACED.search(comment)
    if wrong is None:
        return None
    return (
        f"{wrong.group(0)!r} in the comment retires nothing: write 'retired-after=N' once, right after "
        "the key (or `wgsyncd keys retire`)"
    )


def _retired_value(text: str, where: str) -> int:
    """A ``retired-after=`` value: a version number (0: the key vouches for nothing)."""
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise RestoreError(f"{where}: retired-after={text!r}: expected a version number (0 or more)")
    return int(text)


def read_pins(path: str) -> Pins:
    """Parse a trust file; a bad line is an error naming FILE:LINE (keys are public, but unneeded).

    A key pinned on several lines for one host keeps the strictest retirement: a line
    that retires it is never undone by another that does not.
    """
    from wgsyncd.signing import SigningError, parse_verify_key

    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise RestoreError(f"{path}: cannot read the trusted keys file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise RestoreError(f"{path}: trusted keys file is not text") from None
    keys: dict[str, list[str]] = {}
    retired: dict[tuple[str, str], int] = {}
    for n, line in enumerate(lines, 1):
        fields = line.split(None, 2)
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 2:
            raise RestoreError(f"{path}:{n}: expected 'host_id verify_key [retired-after=N] [comment]'")
        host_id, text, after, comment = _split_pin_line(line)
        try:
            key = parse_verify_key(text, f"{path}:{n}")
        except SigningError as exc:
            raise RestoreError(str(exc)) from None
        if (problem := _comment_problem(comment, after is not None)) is not None:
            raise RestoreError(f"{path}:{n}: {problem}")
        keys.setdefault(host_id, []).append(key)
        if after is not None:
            bound = _retired_value(after, f"{path}:{n}")
            retired[(host_id, key)] = min(bound, retired.get((host_id, key), bound))
    return Pins(path, {h: tuple(dict.fromkeys(k)) for h, k in keys.items()}, retired)


def _replace(path: Path, text: str) -> None:
    """Replace the trust file atomically where it really is, keeping its mode (new: 0644).

    Why: the operator may keep the file beside the recovery key (an offline medium) and
    link to it; replacing the link would leave the real file unchanged, so a retirement
    would silently not apply to the next restore that names the real file.
    """
    real = path.resolve()
    try:
        mode = stat.S_IMODE(real.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644  # public keys; what matters is who may write it
    write_atomic(real, text, mode)


def add_pin(path: str, host_id: str, verify_key: str, comment: str = "") -> bool:
    """Pin ``verify_key`` for ``host_id`` in the trust file (made if missing); False if already there.

    The whole file is checked first and replaced atomically, so a bad file is never
    half-appended to.
    """
    from wgsyncd.signing import SigningError, parse_verify_key

    if not host_id or any(c.isspace() for c in host_id) or host_id.startswith("#"):
        raise RestoreError(f"host_id {host_id!r}: cannot be pinned (empty, whitespace or '#')")
    try:
        key = parse_verify_key(verify_key, f"host {host_id}: verify key")
    except SigningError as exc:
        raise RestoreError(str(exc)) from None
    if any(c in comment for c in "\r\n\0"):
        raise RestoreError("comment: must be one line")
    if RETIRED.match(comment.strip()) or _comment_problem(comment):
        raise RestoreError("comment: must not look like a retirement (`wgsyncd keys retire` retires a key)")
    target = Path(path)
    old = ""
    if target.exists():
        if key in read_pins(path).of(host_id):
            return False
        old = target.read_text()
        if old and not old.endswith("\n"):
            old += "\n"
    text = (old or TRUST_HEADER) + f"{host_id} {key}" + (f" {comment}" if comment else "") + "\n"
    _replace(target, text)
    return True


def pinned_key(path: str, host_id: str, text: str) -> str:
    """The key ``text`` names for ``host_id``: a verify key as given, or the key id (16 hex)
    of one pinned for it, the way `history` and restore's refusals name a signer."""
    from wgsyncd.signing import key_id

    value = text.strip()
    if re.fullmatch(r"[0-9a-f]{16}", value) is None:
        return value  # a verify key (44 base64 characters): checked by its user
    found = [k for k in read_pins(path).of(host_id) if key_id(k) == value]
    if len(found) != 1:
        raise RestoreError(f"{path}: no key with id {value} is pinned for host {host_id}")
    return found[0]


def retire_pin(path: str, host_id: str, verify_key: str, after_version: int) -> int | None:
    """Mark ``verify_key``'s pin for ``host_id`` retired after ``after_version``; return the
    bound it had before (None: it was not retired).

    Every line pinning that key for that host is rewritten (its comment kept), the whole
    file checked first and replaced atomically. A key that is not pinned is an error: a
    retirement must not pin a key by mistake.
    """
    from wgsyncd.signing import SigningError, parse_verify_key

    if not 0 <= after_version < 10**10:  # what read_pins accepts: never write a file it refuses
        raise RestoreError(f"--after-version {after_version}: expected a version number (0 to 9999999999)")
    try:
        key = parse_verify_key(verify_key, f"host {host_id}: verify key")
    except SigningError as exc:
        raise RestoreError(str(exc)) from None
    pins = read_pins(path)  # a bad file is refused before anything is written
    if key not in pins.of(host_id):
        raise RestoreError(f"{path}: key {verify_key} is not pinned for host {host_id}: nothing to retire")
    lines = Path(path).read_text().splitlines()
    for n, line in enumerate(lines):
        fields = line.split(None, 2)
        if len(fields) < 2 or fields[0].startswith("#"):
            continue
        pin_host, text, _after, comment = _split_pin_line(line)
        if pin_host == host_id and parse_verify_key(text, f"{path}:{n + 1}") == key:
            lines[n] = f"{host_id} {key} retired-after={after_version}" + (f" {comment}" if comment else "")
    _replace(Path(path), "\n".join(lines) + "\n")
    return pins.retired_after(host_id, key)


# ---------------------------------------------------------------- checking one version


def _pinned_signer(row: Any, pins: tuple[str, ...]) -> str | None:
    """The pinned key whose signature ``row`` carries, or None."""
    return next((k for k in pins if row.signed_by(k)), None)


def _retired_problem(row: Any, signer: str, pins: Pins, successor: int | None) -> str | None:
    """Why a version ``signer`` signed is refused because the operator retired that key, or None.

    Its bound N is the operator's word; a version its successor (a key pinned and not
    retired) signed with a lower number is the host's: the old key stopped signing when
    the new one started, whatever N says (N set too high, or the new chain numbered from
    1 because the database owner deleted the host's versions before the reinstall).
    """
    from wgsyncd.signing import key_id

    bound = pins.retired_after(row.host_id, signer)
    if bound is None:
        return None
    if row.version > bound:
        return (
            f"signed by key {key_id(signer)}, which {pins.path} retires after version {bound}: "
            "a retired key (it may have leaked) vouches for nothing newer"
        )
    if successor is not None and successor < row.version:
        return (
            f"signed by key {key_id(signer)}, which {pins.path} retires, but a key pinned (and not "
            f"retired) for host {row.host_id} already signed version {successor}: a retired key "
            "(it may have leaked) vouches for nothing after its successor started"
        )
    return None


def problems(rows: list[Any], pins: Pins) -> dict[int, str | None]:
    """version -> why it cannot be trusted (signature, pin, chain), or None; one pass, oldest first.

    A version is in chain when its ``prev`` is GENESIS or the link of an earlier
    version that is itself trusted; each signature is checked once.
    """
    from wgsyncd.signing import GENESIS, key_id

    out: dict[int, str | None] = {}
    trusted_links: dict[str, list[int]] = {}
    successor: dict[str, int] = {}  # host_id -> first version a pinned, not retired key signed
    for row in rows:
        keys = pins.of(row.host_id)
        signer = _pinned_signer(row, keys) if row.signature else None
        if signer is not None and pins.retired_after(row.host_id, signer) is None:
            successor.setdefault(row.host_id, row.version)
        problem: str | None = None
        if not row.signature:
            problem = UNSIGNED
        elif not keys:
            problem = f"no key is pinned for host {row.host_id} in {pins.path}"
        elif signer is None:
            problem = (
                f"signed by key {key_id(row.signing_key)}, which is not pinned for host {row.host_id} "
                f"in {pins.path}"
                if row.signing_key not in keys
                else "signature does not verify: the version was altered or replayed "
                "(its number, time, hashes or chain link differ from what the host signed)"
            )
        elif (retired := _retired_problem(row, signer, pins, successor.get(row.host_id))) is not None:
            problem = retired
        elif row.prev != GENESIS and not any(v < row.version for v in trusted_links.get(row.prev or "", [])):
            problem = (
                f"off the chain: its previous version (link {str(row.prev)[:12]}) is missing, "
                "altered or not signed by a pinned key"
            )
        out[row.version] = problem
        if problem is None:
            trusted_links.setdefault(row.link(), []).append(row.version)
    return out


@dataclass
class Verified:
    """A version restore may use: the blob hashes it signed, and warnings for the operator."""

    sealed: dict[str, str] | None  # interface -> sha256 of its sealed blob; None = unsigned version
    warnings: list[str]
    vouched: str | None = None  # what the host's signed head says, when a pinned key signed it


def check(
    conn: Any,
    ver: Any,
    pins_path: str | None,
    *,
    allow_unsigned: bool = False,
    picked: bool = False,
    at: datetime | None = None,
    head: SignedHead | None = None,
) -> Verified:
    """Refuse ``ver`` (one line naming the version and why) unless a pinned key signed it in chain.

    ``picked``: the version was chosen as the latest or by ``--at``, not by number; a
    refusal then names the newest version that would pass, if any. Picked as the latest
    (no ``at``) or by ``at``: checked against ``head``, the host's signed head as read
    before the version was picked (restore/freshness.py).
    """
    from wgsyncd.signing import doc_sha256, key_id
    from wgsyncd.store import signed

    label = f"host {ver.host_id} version {ver.version}"
    rows = signed.load_chain(conn, ver.host_id)
    row = next((r for r in rows if r.version == ver.version), None)
    if row is None or row.created_at != ver.created_at:
        raise RestoreError(f"{label}: changed while restore read it; try again")
    unsigned = "; --allow-unsigned restores it anyway" if not row.signature else ""
    if unsigned and any(r.signature for r in rows if r.version < row.version):
        # the host signed before this version: an agent that signs never writes unsigned again
        unsigned = "; it follows signed versions, so it is not from before signing (even --allow-unsigned)"
    elif unsigned and allow_unsigned:
        warning = f"WARNING: {label} is UNSIGNED: nothing proves its host wrote it (--allow-unsigned)"
        return Verified(None, [warning])
    if not pins_path:
        if unsigned:
            raise RestoreError(f"{label}: refused: {UNSIGNED}{unsigned}")
        raise RestoreError(
            f"{label}: restore needs the host keys you pinned: --trusted-keys FILE (see `wgsyncd keys trust`)"
        )
    pins = read_pins(pins_path)
    found = problems([r for r in rows if r.version <= row.version], pins)
    problem = found[row.version]
    if problem is None and doc_sha256(ver.doc) != row.doc_sha256:
        problem = "its document does not match the signed hash: tampered"
    if problem is not None:
        good = [v for v, p in found.items() if p is None and v < row.version]
        hint = (
            f" (the newest version that verifies is {max(good)}: --version {max(good)})"
            if picked and good
            else ""
        )
        raise RestoreError(f"{label}: refused: {problem}{unsigned}{hint}")
    key = _pinned_signer(row, pins.of(row.host_id))
    warnings = []
    if (bound := pins.retired_after(row.host_id, key or "")) is not None:
        warnings.append(
            f"warning: {label} is signed by key {key_id(key)}, which {pins.path} retires after version "
            f"{bound}: if that key leaked before this version was written, this version may be the thief's"
        )
    db_pins = signed.pinned_keys(conn, ver.host_id)
    if db_pins and key not in db_pins:
        warnings.append(
            f"warning: host {ver.host_id}: the database's pins do not list key {key_id(key)}, which "
            f"{pins.path} trusts and which signed this version; the database pin was changed or never updated"
        )
    asked = freshness.Asked(latest=picked and at is None, at=at)
    vouched, stale = freshness.head_check(head, row.host_id, row.version, rows, pins, asked)
    return Verified(dict(row.sealed or {}), [*stale, *warnings], vouched)


def blob_ok(verified: Verified, name: str, blob: bytes) -> str | None:
    """Why the sealed blob of interface ``name`` is not the one signed, or None."""
    if verified.sealed is None:
        return None
    want = verified.sealed.get(name)
    if want is None:
        return "its sealed secrets are not covered by the signature"
    if hashlib.sha256(blob).hexdigest() != want:
        return "sealed secrets are not the blob the host signed: tampered"
    return None
