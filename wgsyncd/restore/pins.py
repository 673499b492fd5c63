"""The operator's trust file (``--trusted-keys FILE``): pins of host verify keys, and retirements.

Why a module of its own: parsing and rewriting the file the operator keeps with the
recovery key is one concern; deciding whether a version is trusted (restore/trust.py)
is another. Line format and meaning: see restore/trust.py.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from wgsyncd.atomicfile import write_atomic
from wgsyncd.restore.errors import RestoreError

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


def pin(path: str, host_id: str, verify_key: str, comment: str = "") -> tuple[bool, int | None]:
    """:func:`add_pin`, and what the file then says of the key: (added, the version it is
    retired after, or None). A key already pinned keeps its retirement: pinning it again
    (`keys trust`, `db add-host --trusted-keys`) does not undo `keys retire`."""
    from wgsyncd.signing import parse_verify_key

    if add_pin(path, host_id, verify_key, comment):
        return True, None
    key = parse_verify_key(verify_key, f"host {host_id}: verify key")  # as add_pin compared it
    return False, read_pins(path).retired_after(host_id, key)


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
