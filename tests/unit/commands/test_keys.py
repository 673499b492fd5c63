"""`wgsyncd keys trust|retire`: what the operator is told (review7 of key retirement)."""

from __future__ import annotations

import base64

from click.testing import CliRunner
from nacl.signing import SigningKey

from wgsyncd.cli import main
from wgsyncd.signing import key_id


def _vk() -> str:
    return base64.b64encode(bytes(SigningKey.generate().verify_key)).decode()


def _run(*args: str):
    return CliRunner().invoke(main, ["keys", *args])


def test_retire_names_the_way_out_and_other_hosts_that_still_trust_the_key(tmp_path):
    path, old, new = str(tmp_path / "trusted"), _vk(), _vk()
    for host, key in (("vpn-1", old), ("vpn-1", new), ("vpn-1-renamed", old)):
        assert _run("trust", host, key, "--trusted-keys", path).exit_code == 0
    before = (tmp_path / "trusted").read_text()

    for args in (
        ("vpn-2", old, "3"),
        ("vpn-1", _vk(), "3"),
        ("vpn-1", old, "-1"),
        ("vpn-1", old, "10000000000"),
    ):
        result = _run("retire", args[0], args[1], "--after-version", args[2], "--trusted-keys", path)
        assert result.exit_code == 1 and result.output.startswith("wgsyncd: "), result.output
        assert len(result.output.strip().splitlines()) == 1
    assert (tmp_path / "trusted").read_text() == before  # a refusal writes nothing

    result = _run("retire", "vpn-1", old, "--after-version", "3", "--trusted-keys", path)
    assert result.exit_code == 0, result.output
    assert f"retired: host vpn-1 key {old} after version 3 in {path}" in result.output
    assert (
        f"key {old} is also pinned, not retired, for host vpn-1-renamed: if it leaked, retire it there"
        in (result.output)
    )
    again = _run("trust", "vpn-1", old, "--trusted-keys", path)
    assert (
        "already pinned" in again.output
        and "(retired after version 3: `keys retire` changes that)" in again.output
    )
    zero = _run("retire", "vpn-1", old, "--after-version", "0", "--trusted-keys", path)
    assert zero.exit_code == 0 and "after version 0 (it was retired after version 3)" in zero.output


def test_retire_takes_the_key_id_history_prints(tmp_path):
    path, old, new = str(tmp_path / "trusted"), _vk(), _vk()
    for key in (old, new):
        assert _run("trust", "vpn-1", key, "--trusted-keys", path).exit_code == 0
    result = _run("retire", "vpn-1", key_id(old), "--after-version", "4", "--trusted-keys", path)
    assert result.exit_code == 0 and f"retired: host vpn-1 key {old} after version 4" in result.output
    assert f"vpn-1 {old} retired-after=4" in (tmp_path / "trusted").read_text()
    result = _run("retire", "vpn-2", key_id(old), "--after-version", "4", "--trusted-keys", path)
    assert result.exit_code == 1 and f"no key with id {key_id(old)} is pinned for host vpn-2" in result.output
