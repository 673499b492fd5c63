"""Record what the real writer sends for one host's cycles, so the fleet generator can replay it.

Why: at 167 cycles/s the pure-Python path (build a state, diff it, adapt thousands
of values) costs more CPU than PostgreSQL does, so the old generator measured
itself. Here the real ``store.write_cycle`` runs once per kind of cycle for a
template host (with a signer and a recovery key, as the agent runs), and every
message it hands libpq is captured: the statement text, the parameter bytes as
psycopg adapted them, their type OIDs and formats. The generator replays those
bytes with the few values that identify a cycle swapped in (host_id, hostname,
sync_id, timestamps), so PostgreSQL receives the same statements, the same
parameters and the same rows a host would send, over the same protocol (extended
query, unnamed statements, one round trip each, one transaction).

Kinds recorded: ``first`` (a host's first sync: every row inserted, version 1
signed and sealed), ``steady`` (ten variants: cycle k moves the counters of the
peers j with j % 10 == k % 10, i.e. 10% of the peers, no config change) and
``idle`` (nothing changed).
"""

from __future__ import annotations

import dataclasses
import struct
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import pq

TEMPLATE_HOST = "fleet-template-host"
STEADY_VARIANTS = 10
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
TIMESTAMPTZ, UUID_OID = 1184, 2950


@dataclass
class Statement:
    """One message to libpq: ``params`` None is a simple query (BEGIN, COMMIT), a list
    (maybe empty) the extended protocol with an unnamed statement."""

    command: bytes
    params: list[bytes | None] | None = None
    types: list[int] | None = None
    formats: list[int] | None = None
    result_format: int = 0


@dataclass
class Recording:
    """The statements of each kind of cycle, and the template values to swap per cycle."""

    first: list[Statement]
    steady: list[list[Statement]]
    idle: list[Statement]
    tokens: dict[str, bytes] = field(default_factory=dict)


def _recorder(into: list[Statement], original: Any, extended: bool) -> Any:
    """A stand-in for one PGconn sending method: note the statement, then send it."""

    def send(self: Any, command: bytes, *rest: Any, **kw: Any) -> Any:
        if extended:
            a = {**dict(zip(("values", "types", "formats", "result_format"), rest, strict=False)), **kw}
            a = {k.removeprefix("param_"): v for k, v in a.items()}
            into.append(
                Statement(
                    bytes(command),
                    [None if v is None else bytes(v) for v in (a.get("values") or ())],
                    list(a["types"]) if a.get("types") else None,
                    list(a["formats"]) if a.get("formats") else None,
                    a.get("result_format", 0),
                )
            )
        else:
            into.append(Statement(bytes(command)))
        return original(self, command, *rest, **kw)

    return send


@contextmanager
def _capture(into: list[Statement]) -> Any:
    """Wrap PGconn's sending methods for the duration; restore them after."""
    cls = pq.PGconn
    saved = {name: getattr(cls, name) for name in ("send_query_params", "send_query", "exec_", "exec_params")}
    for name, fn in saved.items():
        setattr(cls, name, _recorder(into, fn, extended=name.endswith("_params")))
    try:
        yield into
    finally:
        for name, fn in saved.items():
            setattr(cls, name, fn)


def counters_at(j: int, cycle: int) -> int:
    """Peer ``j``'s rx counter at ``cycle``: it grows in the cycles where j % 10 == cycle % 10."""
    times_active = (cycle + STEADY_VARIANTS - j % STEADY_VARIANTS) // STEADY_VARIANTS
    return 1000 + j + 4096 * times_active


def _state_at(base: Any, peers: list[Any], cycle: int, when: datetime) -> Any:
    """The template's state at ``cycle``: new Peer objects only for peers whose counters moved."""
    for j, peer in enumerate(peers):
        rx = counters_at(j, cycle)
        if peer.rx_bytes != rx:
            peers[j] = dataclasses.replace(peer, rx_bytes=rx, tx_bytes=2 * rx)
    iface = dataclasses.replace(base.interfaces["wg0"], peers={p.public_key: p for p in peers})
    return dataclasses.replace(base, collected_at=when, interfaces={"wg0": iface})


def _binary_ts(when: datetime) -> bytes:
    """timestamptz in PostgreSQL's binary form: microseconds since 2000-01-01 UTC, int64."""
    return struct.pack("!q", (when - _PG_EPOCH) // timedelta(microseconds=1))


def record(dsn: str, peers: int, state_dir: str) -> Recording:
    """Run the real writer for the template host: first, ten steady and one idle cycle."""
    from tests.beds.postgres import synthetic_state
    from wgsyncd import __version__, secrets, signing, store
    from wgsyncd.config import DatabaseConfig

    keys = secrets.init_recovery(f"{state_dir}/recovery.key")
    signer = signing.signer_for(state_dir, TEMPLATE_HOST)
    base = synthetic_state(TEMPLATE_HOST, interfaces=1, peers=peers)
    mine = list(base.interfaces["wg0"].peers.values())
    conn = store.connect(DatabaseConfig(dsn=dsn, statement_timeout=120.0), "wgsyncd-bench-record")
    # one fixed instant per cycle, so its text and binary forms can be found and swapped
    when = datetime(2031, 1, 1, 0, 0, 0, 123457, tzinfo=UTC)
    sync_id = uuid.UUID("5a5a5a5a-5a5a-4a5a-8a5a-5a5a5a5a5a5a")
    out: dict[str, Any] = {"steady": []}

    def cycle(k: int, kind: str) -> list[Statement]:
        state = _state_at(base, mine, k, when)  # idle: k again, so no peer object is new
        got: list[Statement] = []
        with _capture(got):
            store.write_cycle(
                conn,
                state,
                sync_id=sync_id,
                started_at=when,
                agent_version=__version__,
                recovery_public_key=keys.public,
                signer=signer,
            )
        return got

    try:
        out["first"] = cycle(0, "first")
        for k in range(1, STEADY_VARIANTS + 1):
            out["steady"].append(cycle(k, "steady"))
        out["idle"] = cycle(STEADY_VARIANTS, "idle")
    finally:
        conn.close()
    # steady variant k must be replayed as cycle k % 10: put cycle 10 first (k = 0)
    steady = [out["steady"][-1], *out["steady"][:-1]]
    tokens = {
        "host": TEMPLATE_HOST.encode(),
        "hostname": f"{TEMPLATE_HOST}.example".encode(),
        "sync_text": str(sync_id).encode(),
        "sync_bin": sync_id.bytes,
        "ts_text": when.isoformat().encode(),
        "ts_text_space": when.isoformat(sep=" ").encode(),
        "ts_bin": _binary_ts(when),
    }
    return Recording(first=out["first"], steady=steady, idle=out["idle"], tokens=tokens)
