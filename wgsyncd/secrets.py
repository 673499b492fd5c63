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
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise SealError(f"{path}: cannot read recovery key: {exc.strerror}") from None
    for line in lines:
        k, sep, v = line.partition("=")
        if sep and k.strip() == "private":
            return Secret(parse_key(v.strip(), f"{path}: private"))
    raise SealError(f"{path}: no 'private = ...' line: not a wgsyncd recovery key file")


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
    return seal(recovery_public, json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())


def unseal_json(recovery_private: Secret, blob: bytes, what: str) -> dict:
    """Open a sealed JSON document; see :func:`unseal`."""
    return json.loads(unseal(recovery_private, blob, what))


def recovery_public_of(private: Secret) -> str:
    """The public half of a recovery private key (to check it matches what the DB was sealed to)."""
    return base64.b64encode(bytes(PrivateKey(base64.b64decode(private.reveal())).public_key)).decode()
