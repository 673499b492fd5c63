"""wgsyncd.state: the shared value rules (keys) every source and restore rely on."""

from __future__ import annotations

import base64
import os
from pathlib import Path


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _non_canonical(key: str) -> str:
    """The same 32 bytes spelled with non-zero padding bits in the last base64 digit."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return key[:42] + alphabet[alphabet.index(key[42]) | 1] + "="


def test_a_key_with_non_zero_padding_bits_is_refused_like_wg_does(tmp_path: Path) -> None:
    """wg's key_from_base64 refuses it; accepting it would make one peer look like two."""
    import shutil
    import subprocess

    import pytest

    from wgsyncd.sources.conffiles import ConfParseError, parse_conf
    from wgsyncd.state import StateError, parse_key

    good = _key()
    bad = _non_canonical(good)
    assert base64.b64decode(bad) == base64.b64decode(good)
    if shutil.which("wg"):  # the oracle: the real tool refuses the same spelling
        proc = subprocess.run(["wg", "pubkey"], input=bad, capture_output=True, text=True, check=False)
        assert proc.returncode != 0
    with pytest.raises(StateError) as exc:
        parse_key(bad, "somewhere")
    assert bad not in str(exc.value) and "somewhere" in str(exc.value)
    assert parse_key(good, "x") == good
    text = f"[Interface]\nPrivateKey = {_key()}\n\n[Peer]\nPublicKey = {bad}\nAllowedIPs = 10.0.0.2/32\n"
    with pytest.raises(ConfParseError) as cexc:
        parse_conf(text, str(tmp_path / "wg0.conf"))
    assert "wg0.conf:5 PublicKey" in str(cexc.value) and bad not in str(cexc.value)
