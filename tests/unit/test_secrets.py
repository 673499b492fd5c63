"""secrets: sealing to the recovery key; wrong key and tampering refused without leaking."""

from __future__ import annotations

import os
import stat

import pytest

from wgsyncd import secrets
from wgsyncd.secrets import SealError


def test_round_trip_and_file_mode(tmp_path):
    path = tmp_path / "recovery.key"
    keys = secrets.init_recovery(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    private = secrets.load_recovery_private(str(path))
    assert secrets.recovery_public_of(private) == keys.public
    blob = secrets.seal_json(keys.public, {"wg0": {"private_key": "x"}})
    assert b"private_key" not in blob
    assert secrets.unseal_json(private, blob, "version 1") == {"wg0": {"private_key": "x"}}


def test_init_refuses_to_overwrite(tmp_path):
    path = tmp_path / "recovery.key"
    secrets.init_recovery(str(path))
    with pytest.raises(FileExistsError):
        secrets.init_recovery(str(path))


def test_wrong_key_and_tampered_blob_fail_clearly(tmp_path):
    a = secrets.init_recovery(str(tmp_path / "a"))
    b = secrets.init_recovery(str(tmp_path / "b"))
    blob = secrets.seal(a.public, b"secret")
    with pytest.raises(SealError, match="version 3: cannot open sealed secrets") as exc:
        secrets.unseal(b.private, blob, "version 3")
    assert b.private.reveal() not in str(exc.value)
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(SealError):
        secrets.unseal(a.private, bytes(tampered), "version 3")


def test_bad_recovery_file_names_the_file(tmp_path):
    path = tmp_path / "nope"
    path.write_text("hello\n")
    with pytest.raises(SealError, match=str(path)):
        secrets.load_recovery_private(str(path))
