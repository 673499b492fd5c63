"""Issue 16 item 9: a conf file wg-quick refuses is reported, never guessed at, and still backed up.

Real files, the real conf reader, merge and store on a real PostgreSQL: the raw text of a
refused file is sealed to the recovery key and referenced from the config version, a
change of the broken file makes a new version, and the interface's last good document
(what restore would use) is kept, not replaced by a guess.
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.unit.sources.test_conffiles import FULL, PRIV
from wgsyncd import secrets, store
from wgsyncd.config import ConfConfig
from wgsyncd.merge import merge
from wgsyncd.sources import conffiles

pytestmark = pytest.mark.postgres

BROKEN = (
    f"[Interface]\nPrivateKey = {PRIV}\nListenPort = 51820\n# a comment only the raw text keeps\n[Peerz]\n"
)


def cycle(conn: psycopg.Connection[Any], directory: Path, recovery: str) -> store.WriteReport:
    """One real cycle over the conf source only."""
    result = conffiles.read(ConfConfig(directory=str(directory)))
    state = merge("host-unparsed", "h", [result], datetime.now(UTC))
    return store.write_cycle(
        conn,
        state,
        sync_id=uuid.uuid4(),
        started_at=datetime.now(UTC),
        agent_version="t",
        recovery_public_key=recovery,
    )


def latest(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    row = conn.execute(
        "SELECT doc FROM config_versions WHERE host_id = 'host-unparsed' ORDER BY version DESC LIMIT 1"
    ).fetchone()
    conn.rollback()
    assert row is not None
    return row[0]


def unseal_unparsed(conn: psycopg.Connection[Any], doc: dict[str, Any], keys: secrets.RecoveryKeys) -> str:
    ref = doc["interfaces"]["wg0"]["unparsed_conf"]
    row = conn.execute(
        "SELECT sealed FROM config_secrets WHERE host_id = 'host-unparsed' AND interface = 'wg0' "
        "AND secrets_sha256 = %s",
        (ref["sha256"],),
    ).fetchone()
    conn.rollback()
    assert row is not None
    return secrets.unseal_json(keys.private, bytes(row[0]), "test")["conf_text"]


def test_refused_file_is_reported_sealed_and_versioned(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    keys = secrets.init_recovery(str(Path(tempfile.mkdtemp()) / "k"))
    confdir = tmp_path / "wireguard"
    confdir.mkdir()
    (confdir / "wg0.conf").write_text(FULL)
    assert cycle(conn, confdir, keys.public).config_version == 1
    good = latest(conn)["interfaces"]["wg0"]

    (confdir / "wg0.conf").write_text(BROKEN)
    report = cycle(conn, confdir, keys.public)
    assert report.config_version == 2  # the broken text is new content: a version
    doc = latest(conn)["interfaces"]["wg0"]
    # the last good reading stays what restore sees; nothing is guessed from the broken file
    assert {k: v for k, v in doc.items() if k != "unparsed_conf"} == good
    assert doc["unparsed_conf"]["conf_path"] == str(confdir / "wg0.conf")
    assert unseal_unparsed(conn, latest(conn), keys) == BROKEN
    status = conn.execute(
        "SELECT status FROM sync_status WHERE host_id = 'host-unparsed' ORDER BY started_at DESC LIMIT 1"
    ).fetchone()
    conn.rollback()
    assert status == ("partial",)

    assert cycle(conn, confdir, keys.public).config_version is None  # unchanged: no version
    (confdir / "wg0.conf").write_text(BROKEN + "# edited\n")
    assert cycle(conn, confdir, keys.public).config_version == 3
    assert unseal_unparsed(conn, latest(conn), keys) == BROKEN + "# edited\n"

    (confdir / "wg0.conf").write_text(FULL)  # fixed: an ordinary version again
    assert cycle(conn, confdir, keys.public).config_version == 4
    assert "unparsed_conf" not in latest(conn)["interfaces"]["wg0"]


def test_refused_file_without_an_earlier_version_is_still_backed_up(
    conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    keys = secrets.init_recovery(str(Path(tempfile.mkdtemp()) / "k"))
    (tmp_path / "wg0.conf").write_text(BROKEN)
    assert cycle(conn, tmp_path, keys.public).config_version == 1
    doc = latest(conn)
    assert doc["interfaces"]["wg0"]["peers"] == [] and doc["interfaces"]["wg0"]["has_private_key"] is False
    assert unseal_unparsed(conn, doc, keys) == BROKEN
