"""Review findings for the store, restore and config, each against the real part (PostgreSQL 15)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from tests.beds.postgres import synthetic_state
from wgsyncd import store
from wgsyncd.config import DatabaseConfig
from wgsyncd.state import HostState, Source, SourceError
from wgsyncd.store import versions

pytestmark = pytest.mark.postgres


@pytest.fixture
def conn(db_config: DatabaseConfig) -> Iterator[psycopg.Connection[Any]]:
    """A store connection to a fresh, migrated database."""
    c = store.connect(db_config)
    store.migrate(c)
    yield c
    c.close()


def _write(conn: psycopg.Connection[Any], state: HostState) -> store.WriteReport:
    """One cycle, with secrets not stored (the version hash still follows the config)."""
    return store.write_cycle(
        conn, state, sync_id=uuid.uuid4(), started_at=datetime.now(UTC), agent_version="test"
    )


def test_version_catches_up_after_a_partial_cycle_wrote_the_rows(conn: psycopg.Connection[Any]) -> None:
    """A change first seen in a partial cycle must reach the next complete cycle's version.

    The partial cycle writes the known value to the config row but carries the
    interface's previous version document forward; the next complete cycle then
    writes no config row, and the fast path must not take that as "nothing changed".
    """
    assert _write(conn, synthetic_state("host-r")).config_version == 1
    changed = synthetic_state("host-r")
    changed.interfaces["wg0"].listen_port = 51999  # `wg set wg0 listen-port` while wgrest timed out
    changed.errors = [SourceError(Source.WGREST, "http://127.0.0.1:51822/v1/devices/wg0", "timeout", "wg0")]
    partial = _write(conn, changed)
    assert partial.status == "partial" and partial.tables["interfaces"].updated == 1
    assert partial.config_version is None  # wg0 was read incompletely: its document is carried forward

    complete = synthetic_state("host-r")
    complete.interfaces["wg0"].listen_port = 51999
    report = _write(conn, complete)
    latest = versions.load_version(conn, "host-r")
    assert latest is not None
    assert latest.doc["interfaces"]["wg0"]["listen_port"] == 51999, report
    assert report.config_version == 2
    assert _write(conn, complete).config_version is None  # and idle again afterwards
