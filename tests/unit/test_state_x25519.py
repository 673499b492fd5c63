"""state.public_key_from_private: X25519 through libsodium, against RFC 7748 and ``wg pubkey``."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess

import pytest

from tests.beds import unavailable
from wgsyncd.state import Secret, StateError, public_key_from_private


def b64(hex_text: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_text)).decode()


# RFC 7748 section 6.1 (Alice and Bob), and section 5.2's first iteration (k = u = 9),
# which also checks the clamping (9 is not a clamped scalar)
RFC7748 = [
    (
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
    ),
    (
        "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
    ),
    (
        "0900000000000000000000000000000000000000000000000000000000000000",
        "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079",
    ),
]


@pytest.mark.parametrize(("private", "public"), RFC7748)
def test_rfc7748_vectors(private: str, public: str) -> None:
    assert public_key_from_private(Secret(b64(private))) == b64(public)


def test_unclamped_and_clamped_keys_give_one_public_key() -> None:
    """wg clamps a private key before use; a key with the clamped bits set is the same key."""
    raw = bytearray(os.urandom(32))
    raw[0] |= 7
    raw[31] |= 128
    raw[31] &= ~64 & 0xFF
    clamped = bytearray(raw)
    clamped[0] &= 248
    clamped[31] = (clamped[31] & 127) | 64
    loose = public_key_from_private(Secret(base64.b64encode(raw).decode()))
    assert loose == public_key_from_private(Secret(base64.b64encode(clamped).decode()))


def test_matches_wg_pubkey() -> None:
    """The reference: wireguard-tools' own derivation, on random keys and the edge scalars."""
    if shutil.which("wg") is None:
        unavailable("wireguard-tools", "no `wg` on PATH")
    keys = [base64.b64encode(os.urandom(32)).decode() for _ in range(8)]
    keys += [base64.b64encode(bytes([b]) * 32).decode() for b in (0x00, 0xFF)]
    for key in keys:
        expected = subprocess.run(
            ["wg", "pubkey"], input=key + "\n", capture_output=True, text=True, check=True
        )
        assert public_key_from_private(Secret(key)) == expected.stdout.strip()


def test_wrong_length_is_a_state_error_without_the_value() -> None:
    short = base64.b64encode(b"k" * 31).decode()
    with pytest.raises(StateError) as err:
        public_key_from_private(Secret(short))
    assert short not in str(err.value)
