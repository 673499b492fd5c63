"""The host's signing key and the signed chain of its config versions (issue 12).

Why: sealed boxes are anonymous (anyone holding the recovery PUBLIC key, i.e. every
host, can seal anything) and the database is shared, so neither a sealed blob nor a
hash stored beside it proves who wrote a version. Each host therefore signs every
config version with its own Ed25519 key (PyNaCl), made on first start, 0600 in the
state directory and never copied off the host. The operator pins the verify key out
of band; restore trusts only pinned keys (wgsyncd/restore/trust.py).

What is signed (:meth:`Signed.message`): a domain-separated canonical JSON of the
host_id, the version number, the link of the version the host signed before
(``prev``; :data:`GENESIS` starts a chain), the creation time, the content and
document hashes, the recovery key fingerprint and the sha256 of every sealed blob's
bytes. A version's *link* is the sha256 of that message, so versions form a chain per
host: a replay under another number, a swapped blob, an edited time or document all
fail the signature or the chain.

The agent remembers the link of the last version it signed (``last-signed.json`` in
the state directory, atomic write) so it never trusts the latest row blindly
(:func:`judge`). This module holds no SQL: store/signed.py reads and writes rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

from wgsyncd.atomicfile import write_atomic
from wgsyncd.canonical import signed_bytes, sorted_text

log = logging.getLogger(__name__)

DOMAIN = b"wgsyncd signed config version v1\n"
GENESIS = "0" * 64  # the ``prev`` of a chain's first version
KEY_FILE = "signing.key"
RECORD_FILE = "last-signed.json"
_KEY_HEADER = "# wgsyncd host signing key (Ed25519): stays on this host; its verify key is public\n"


class SigningError(Exception):
    """The signing key or local record cannot be used; names the file, never key material."""


def doc_sha256(doc: dict[str, Any]) -> str:
    """sha256 of a version's whole public document (canonical JSON; survives jsonb round trips)."""
    return hashlib.sha256(signed_bytes(doc)).hexdigest()


def key_id(verify_key: str | None) -> str:
    """A short, stable name for a verify key in messages (first 16 hex of its sha256)."""
    if not verify_key:
        return "none"
    try:
        return hashlib.sha256(base64.b64decode(verify_key)).hexdigest()[:16]
    except (binascii.Error, ValueError):
        return "invalid"


def parse_verify_key(text: str, where: str) -> str:
    """A base64 Ed25519 verify key (32 bytes), checked; errors name ``where``."""
    value = text.strip()
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SigningError(f"{where}: not a base64 Ed25519 verify key") from None
    if len(raw) != 32 or base64.b64encode(raw).decode() != value:
        raise SigningError(f"{where}: a verify key is 32 bytes (44 base64 characters)")
    return value


# ---------------------------------------------------------------- the host key


@dataclass(frozen=True)
class HostKey:
    """The host's signing key (loaded from ``path``) and its public verify key."""

    path: str
    verify_key: str
    _key: SigningKey = field(repr=False, compare=False)

    def sign(self, message: bytes) -> str:
        """The detached Ed25519 signature of ``message``, base64."""
        return base64.b64encode(self._key.sign(message).signature).decode()


def _read_key(path: Path) -> HostKey:
    """Load a key file written by :func:`load_or_create`; every problem names the file only."""
    try:
        st = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise SigningError(f"{path}: cannot read the host signing key: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SigningError(f"{path}: malformed host signing key file (not text)") from None
    if st.st_mode & 0o077:
        raise SigningError(
            f"{path}: host signing key is readable by others (mode {st.st_mode & 0o777:o}); chmod 600"
        )
    seed = None
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip() == "private":
            seed = v.strip()
    if seed is None:
        raise SigningError(f"{path}: malformed host signing key file (no 'private = ...' line)")
    try:
        raw = base64.b64decode(seed, validate=True)
        if len(raw) != 32:
            raise ValueError
        key = SigningKey(raw)
    except (binascii.Error, ValueError, CryptoError):
        raise SigningError(f"{path}: malformed host signing key (not a 32-byte base64 seed)") from None
    return HostKey(str(path), base64.b64encode(bytes(key.verify_key)).decode(), key)


def load_or_create(state_dir: str) -> HostKey:
    """The host's key from ``state_dir``/signing.key, made there (0600) when there is none.

    Never overwrites: an existing file that cannot be read or parsed is an error, not
    a reason to make a new key (that would silently start an unpinned identity).
    """
    directory = Path(state_dir)
    path = directory / KEY_FILE
    if path.exists() or path.is_symlink():
        return _read_key(path)
    key = SigningKey.generate()
    seed = base64.b64encode(bytes(key)).decode()
    verify = base64.b64encode(bytes(key.verify_key)).decode()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return _read_key(path)
    except OSError as exc:
        raise SigningError(f"{path}: cannot create the host signing key: {exc.strerror}") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(_KEY_HEADER + f"verify = {verify}\nprivate = {seed}\n")
        fh.flush()
        os.fsync(fh.fileno())
    log.info("made the host signing key %s (verify key %s): pin it for restore", path, verify)
    return HostKey(str(path), verify, key)


def verify(verify_key: str, message: bytes, signature: str | None) -> bool:
    """Whether ``signature`` (base64) is ``verify_key``'s signature of ``message``."""
    if not signature:
        return False
    try:
        VerifyKey(base64.b64decode(verify_key)).verify(message, base64.b64decode(signature, validate=True))
    except (BadSignatureError, CryptoError, binascii.Error, ValueError, TypeError):
        return False
    return True


# ---------------------------------------------------------------- the signed fields of a version


def _time(when: datetime) -> str:
    """The creation time as signed: UTC, microseconds (timestamptz's precision)."""
    return when.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Signed:
    """The signed fields of one config version, as stored in its row."""

    host_id: str
    version: int
    prev: str | None
    created_at: datetime
    content_sha256: str
    doc_sha256: str | None
    sealed: dict[str, str] | None  # interface -> sha256 of its sealed blob
    recovery_key_fp: str | None
    signing_key: str | None = None  # a hint for messages; trust comes from pins, never from this
    signature: str | None = None

    def message(self) -> bytes:
        """The exact bytes signed: a domain tag, then canonical JSON of every signed field."""
        return DOMAIN + signed_bytes(
            {
                "host_id": self.host_id,
                "version": self.version,
                "prev": self.prev,
                "created_at": _time(self.created_at),
                "content_sha256": self.content_sha256,
                "doc_sha256": self.doc_sha256,
                "sealed": self.sealed or {},
                "recovery_key_fp": self.recovery_key_fp,
            }
        )

    def link(self) -> str:
        """This version's link in the chain: the sha256 of its signed message."""
        return hashlib.sha256(self.message()).hexdigest()

    def signed_by(self, verify_key: str) -> bool:
        """Whether the stored signature is ``verify_key``'s over these fields."""
        return verify(verify_key, self.message(), self.signature)


# ---------------------------------------------------------------- the signed head (freshness)


HEAD_DOMAIN = b"wgsyncd signed head v1\n"  # never a version's DOMAIN: neither signature passes as the other


@dataclass(frozen=True)
class SignedHead:
    """The host says: at ``at``, my newest config version is ``version`` (``link``). Signed every cycle.

    Why: versions chain backwards, so a database that withholds a host's newest versions
    still shows a valid chain ending at an older one. The head (hosts row, migration 0009)
    says which version was newest and when the host last said so; a database can show
    an older head, never make a new one, so what it withholds shows as an old time.
    """

    host_id: str
    version: int
    link: str
    at: datetime  # the host's clock when it signed
    signature: str | None = None

    def message(self) -> bytes:
        """The exact bytes signed: the head domain tag, then canonical JSON of the fields."""
        fields = {"host_id": self.host_id, "version": self.version, "link": self.link, "at": _time(self.at)}
        return HEAD_DOMAIN + signed_bytes(fields)

    def signed_by(self, verify_key: str) -> bool:
        """Whether the stored signature is ``verify_key``'s over these fields."""
        return verify(verify_key, self.message(), self.signature)


# ---------------------------------------------------------------- the local record (item 2)


@dataclass(frozen=True)
class LastSigned:
    """The last version this host signed and saw committed."""

    version: int
    link: str


def read_record(state_dir: str, host_id: str) -> LastSigned | None:
    """This host_id's entry in last-signed.json; None when absent. A damaged file is logged, not fatal."""
    path = Path(state_dir) / RECORD_FILE
    try:
        data = json.loads(path.read_text())
        entry = data[host_id]
        return LastSigned(int(entry["version"]), str(entry["link"]))
    except FileNotFoundError:
        return None
    except KeyError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.warning("%s: unusable record of the last signed version (%s): starting a new chain", path, exc)
        return None


def write_record(state_dir: str, host_id: str, last: LastSigned) -> None:
    """Replace this host_id's entry atomically (temp file, fsync, rename)."""
    directory = Path(state_dir)
    path = directory / RECORD_FILE
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data[host_id] = {"version": last.version, "link": last.link}
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, sorted_text(data), 0o600)


@dataclass
class Verdict:
    """What the agent makes of the latest row before it writes (see :func:`judge`)."""

    ours: bool  # the latest row is the version this host last signed: trust it
    prev: str | None  # the link to chain to; None = decide after checking own last version
    problem: str | None = None  # a tamper line for the journal and sync_status
    note: str | None = None  # why a new chain segment starts (not an attack)


def judge(key: HostKey, last: LastSigned | None, latest: Signed | None) -> Verdict:
    """Whether the latest row is this host's own last version, and what to chain to.

    - signed by this host's key and either the recorded link or its direct successor
      (committed, but the record write was lost): ours;
    - no record (fresh or reinstalled host, versions from before signing): a new chain
      segment starting at GENESIS, announced but not an alarm;
    - a record, and the latest row is something else (a forged, replayed, edited or
      rolled-back version, or versions deleted): a tamper line; the caller chains to
      its own last version if that row is still intact, else starts a new segment.
    """
    if latest is not None and latest.signed_by(key.verify_key):
        link = latest.link()
        if last is None or link == last.link or (latest.prev == last.link and latest.version > last.version):
            return Verdict(ours=True, prev=link)
    if last is None:
        if latest is None:
            return Verdict(ours=False, prev=GENESIS)
        why = (
            "the latest version is unsigned (written before signing existed)"
            if not latest.signature
            else f"the latest version {latest.version} is signed by key {key_id(latest.signing_key)}, not "
            f"this host's key {key_id(key.verify_key)} (a reinstalled host? pin the new key)"
        )
        return Verdict(ours=False, prev=GENESIS, note=why)
    if latest is None:
        what = "the host has no config versions left"
    else:
        what = f"the latest config version is {latest.version} ({_describe(key, latest)})"
    problem = (
        f"tamper: {what}, but this host last signed version {last.version} (link {last.link[:12]}): "
        "versions were forged, edited, replayed or deleted in the database; writing a new signed version"
    )
    return Verdict(ours=False, prev=None, problem=problem)


def _describe(key: HostKey, row: Signed) -> str:
    """How a foreign latest row differs, for the tamper line."""
    if not row.signature:
        return "unsigned"
    if not row.signed_by(key.verify_key):
        return f"not validly signed by this host's key {key_id(key.verify_key)}"
    return f"an older or out-of-chain version signed by this host, link {row.link()[:12]}"


# ---------------------------------------------------------------- the agent's signer


@dataclass
class Signer:
    """One host_id's key and local record, for the writer (store/versions.py).

    ``pending`` is set by the writer inside its transaction and written to the local
    record only after the commit (:meth:`committed`); ``problem`` is this cycle's
    tamper line (sync_status ``message``), None when the latest row was ours.
    """

    key: HostKey
    state_dir: str
    host_id: str
    last: LastSigned | None = None
    pending: LastSigned | None = None
    problem: str | None = None

    def begin(self) -> None:
        """Forget what an earlier (maybe rolled back) cycle planned."""
        self.pending, self.problem = None, None

    def head(self, version: int, link: str) -> SignedHead:
        """This host's signed word, now, that ``version`` (``link``) is its newest."""
        unsigned = SignedHead(self.host_id, version, link, datetime.now(UTC))
        return replace(unsigned, signature=self.key.sign(unsigned.message()))

    def committed(self) -> None:
        """The transaction that wrote ``pending`` committed: remember it on disk."""
        if self.pending is None:
            return
        self.last, self.pending = self.pending, None
        try:
            write_record(self.state_dir, self.host_id, self.last)
        except OSError as exc:
            log.error("%s: cannot record the last signed version: %s", self.state_dir, exc.strerror)


def signer_for(state_dir: str, host_id: str, signers: dict[tuple[str, str], Signer] | None = None) -> Signer:
    """The signer for (state_dir, host_id): the key and record are read once per ``signers``
    (the caller's memo, memo.Memo.signers; None: read now, kept by nobody)."""
    signers = {} if signers is None else signers
    signer = signers.get((state_dir, host_id))
    if signer is None:
        signer = Signer(load_or_create(state_dir), state_dir, host_id, read_record(state_dir, host_id))
        signers[(state_dir, host_id)] = signer
    return signer
