"""Sealing secrets to the operator's recovery key, so the database alone cannot leak them.

Hosts hold only the recovery *public* key: they can seal (X25519 sealed boxes,
libsodium via PyNaCl) but never open what they wrote. The private half lives
offline with the operator and is needed only by `wgsyncd restore`.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from wgsyncd.canonical import COMPACT
from wgsyncd.state import Secret, parse_key

RECOVERY_FILE_HEADER = "# wgsyncd recovery private key: keep offline; needed only to restore secrets\n"


class SealError(ValueError):
    """A blob that cannot be opened: wrong recovery key or tampered data. Never shows key material."""


@dataclass(frozen=True)
class RecoveryKeys:
    """A freshly made recovery key pair."""

    private: Secret
    public: str


def init_recovery(path: str) -> RecoveryKeys:
    """Make a key pair, write the private half to ``path`` (0600, must not exist), return both."""
    key = PrivateKey.generate()
    private = base64.b64encode(bytes(key)).decode()
    public = base64.b64encode(bytes(key.public_key)).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(RECOVERY_FILE_HEADER + f"public = {public}\nprivate = {private}\n")
    return RecoveryKeys(Secret(private), public)


def load_recovery_private(path: str) -> Secret:
    """Read the private half written by :func:`init_recovery`; errors name the file, never the key."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SealError(f"{path}: cannot read recovery key: {exc.strerror}") from None
    return parse_recovery_private(text, path)


def parse_recovery_private(text: str, where: str) -> Secret:
    """The private key from a recovery key file's text (a file, stdin or a systemd credential).

    A bare base64 key on its own is accepted too, so `--recovery-key -` can take it
    from a password manager's pipe.
    """
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep and k.strip() == "private":
            return Secret(parse_key(v.strip(), f"{where}: private"))
    bare = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(bare) == 1 and len(bare[0]) == 44:
        return Secret(parse_key(bare[0], f"{where}: private"))
    raise SealError(f"{where}: no 'private = ...' line: not a wgsyncd recovery key file")


def seal(recovery_public: str, data: bytes) -> bytes:
    """Encrypt ``data`` so only the recovery private key opens it (anonymous sender)."""
    return SealedBox(PublicKey(base64.b64decode(recovery_public))).encrypt(data)


def unseal(recovery_private: Secret, blob: bytes, what: str) -> bytes:
    """Open a sealed blob; a wrong key or tampered blob raises SealError naming ``what``."""
    box = SealedBox(PrivateKey(base64.b64decode(recovery_private.reveal())))
    try:
        return box.decrypt(bytes(blob))
    except CryptoError:
        raise SealError(f"{what}: cannot open sealed secrets: wrong recovery key or tampered data") from None


def seal_json(recovery_public: str, obj: dict) -> bytes:
    """Seal a JSON document (the secrets of one config version)."""
    return seal(recovery_public, COMPACT.encode(obj).encode())


def unseal_json(recovery_private: Secret, blob: bytes, what: str) -> dict:
    """Open a sealed JSON document; see :func:`unseal`."""
    return json.loads(unseal(recovery_private, blob, what))


def recovery_public_of(private: Secret) -> str:
    """The public half of a recovery private key (to check it matches what the DB was sealed to)."""
    return base64.b64encode(bytes(PrivateKey(base64.b64decode(private.reveal())).public_key)).decode()
