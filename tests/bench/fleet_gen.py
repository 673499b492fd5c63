"""The fleet generator's worker process: many hosts, one connection each, replaying recorded cycles.

Each simulated host holds its own libpq connection (to pgbouncer or PostgreSQL), as
a running agent does. One process drives thousands of them with a selector: a cycle
is the recorded statement list (tests/bench/fleet_record.py) sent one statement per
round trip, the next sent when the previous result is in, as psycopg does. The only
Python per cycle is swapping host_id, sync_id and timestamps into the pre-built
parameter bytes, so the generator's CPU stays a small fraction of PostgreSQL's.
"""

from __future__ import annotations

import heapq
import selectors
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from psycopg import pq

from tests.bench.fleet_record import Recording, Statement, _binary_ts

_OK = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)


def host_name(h: int) -> str:
    """Host number -> host_id (the template's token is swapped for it)."""
    return f"fleet-{h:05d}"


@dataclass
class Prepared:
    """One recorded statement, with where each per-cycle value goes in its parameters."""

    stmt: Statement
    host_subs: list[int] = field(default_factory=list)  # params that are the host_id
    name_subs: list[int] = field(default_factory=list)  # params that are the hostname
    text_subs: list[int] = field(default_factory=list)  # params holding a timestamp or sync_id text
    uuid_subs: list[int] = field(default_factory=list)  # binary uuid params (sync_id)
    ts_subs: list[int] = field(default_factory=list)  # binary timestamptz params (started_at ...)


def prepare(stmts: list[Statement], tokens: dict[str, bytes]) -> list[Prepared]:
    """Find, once, the parameters that change per cycle; the rest is sent as recorded.

    host_id is swapped only where it is the whole parameter (the host_id column and
    argument): names, comments and the signed document inside other parameters stay
    the template's, so every replayed row still matches its row_hash and signature.
    """
    out = []
    text_tokens = (tokens["ts_text"], tokens["ts_text_space"], tokens["sync_text"])
    for st in stmts:
        p = Prepared(st)
        for i, v in enumerate(st.params or ()):
            if v is None:
                continue
            if v == tokens["host"]:
                p.host_subs.append(i)
            elif v == tokens["hostname"]:
                p.name_subs.append(i)
            elif v == tokens["sync_bin"]:
                p.uuid_subs.append(i)
            elif v == tokens["ts_bin"]:
                p.ts_subs.append(i)
            elif any(t in v for t in text_tokens):
                p.text_subs.append(i)
        out.append(p)
    return out


def render(p: Prepared, tokens: dict[str, bytes], host: bytes, sync: uuid.UUID, now: datetime) -> list[Any]:
    """The parameters of one statement for one host's cycle."""
    params = list(p.stmt.params or ())
    for i in p.host_subs:
        params[i] = host
    for i in p.name_subs:
        params[i] = host + b".example"
    if p.text_subs:
        iso, iso_sp = now.isoformat().encode(), now.isoformat(sep=" ").encode()
        sync_text = str(sync).encode()
        for i in p.text_subs:
            params[i] = (
                params[i]
                .replace(tokens["ts_text"], iso)
                .replace(tokens["ts_text_space"], iso_sp)
                .replace(tokens["sync_text"], sync_text)
            )
    for i in p.uuid_subs:
        params[i] = sync.bytes
    if p.ts_subs:
        ts = _binary_ts(now)
        for i in p.ts_subs:
            params[i] = ts
    return params


class Conn:
    """One simulated host: its connection and the cycle it is in."""

    __slots__ = ("due", "failed", "fd", "h", "i", "kind", "name", "now", "pg", "queue", "stmts", "sync", "t0")

    def __init__(self, h: int, conninfo: bytes) -> None:
        self.h, self.name = h, host_name(h).encode()
        self.pg = pq.PGconn.connect(conninfo)
        if self.pg.status != pq.ConnStatus.OK:
            raise RuntimeError(f"fleet generator: connect failed: {self.pg.get_error_message()!r}")
        self.fd = self.pg.socket
        self.stmts: list[Prepared] = []
        self.i, self.t0, self.due, self.kind, self.failed = 0, 0.0, 0.0, "", False
        self.queue: list[tuple[float, str]] = []  # cycles due while one was running
        self.sync, self.now = uuid.UUID(int=0), datetime.now(UTC)  # this cycle's sync_id and time

    def send(self, p: Prepared, params: list[Any] | None) -> None:
        """One statement, the way psycopg sends it (simple query or unnamed extended)."""
        st = p.stmt
        if st.params is None:
            self.pg.send_query(st.command)
        else:
            self.pg.send_query_params(st.command, params or None, st.types, st.formats, st.result_format)


@dataclass
class Driver:
    """Runs cycles on many connections at once; records (host, kind, due, start, end, ok)."""

    rec: Recording
    conns: dict[int, Conn]
    kinds: dict[str, list[list[Prepared]]] = field(default_factory=dict)
    sel: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    inflight: int = 0
    out: list[tuple[int, str, float, float, float, bool]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        t = self.rec.tokens
        self.kinds = {
            "first": [prepare(self.rec.first, t)],
            "steady": [prepare(s, t) for s in self.rec.steady],
            "idle": [prepare(self.rec.idle, t)],
        }
        for c in self.conns.values():
            self.sel.register(c.fd, selectors.EVENT_READ, c)

    def start(self, c: Conn, kind: str, k: int, due: float) -> None:
        """Begin cycle ``k`` of ``kind`` on ``c`` (queued when c is still in a cycle)."""
        if c.stmts:
            c.queue.append((due, f"{kind}:{k}"))
            return
        variants = self.kinds[kind]
        c.stmts, c.i, c.kind, c.due, c.failed = variants[k % len(variants)], 0, kind, due, False
        c.t0 = time.time()
        c.sync, c.now = uuid.uuid4(), datetime.now(UTC)
        self.inflight += 1
        self._send_next(c)

    def _send_next(self, c: Conn) -> None:
        """Send statement c.i of the cycle, with the cycle's host_id, sync_id and time."""
        p = c.stmts[c.i]
        params = None if p.stmt.params is None else render(p, self.rec.tokens, c.name, c.sync, c.now)
        c.send(p, params)

    def _on_ready(self, c: Conn) -> None:
        """Read what arrived; when a statement finished, send the next or end the cycle."""
        c.pg.consume_input()
        while not c.pg.is_busy():
            res = c.pg.get_result()
            if res is not None:
                if res.status not in _OK and not c.failed:
                    c.failed = True
                    msg = (res.error_message or b"").decode(errors="replace").strip()
                    self.errors.append(f"{c.name.decode()}: {msg}")
                continue
            self._statement_done(c)
            return

    def _statement_done(self, c: Conn) -> None:
        """The current statement's results are all in: next statement, ROLLBACK, or cycle end."""
        if not c.stmts:
            return
        if c.failed and c.i < len(c.stmts) - 1:
            c.i = len(c.stmts) - 1  # skip to the end: the transaction is aborted; end it
            c.pg.send_query(b"ROLLBACK")
            return
        c.i += 1
        if c.i < len(c.stmts):
            self._send_next(c)
            return
        self.out.append((c.h, c.kind, c.due, c.t0, time.time(), not c.failed))
        c.stmts = []
        self.inflight -= 1
        if c.queue:
            due, what = c.queue.pop(0)
            kind, k = what.split(":")
            self.start(c, kind, int(k), due)

    def poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` for results and handle them."""
        for key, _ in self.sel.select(max(0.0, timeout)):
            self._on_ready(key.data)

    def drain(self, deadline: float) -> None:
        """Wait for every running cycle to end (or the deadline)."""
        while self.inflight and time.time() < deadline:
            self.poll(0.5)


def host_conninfo(args: dict[str, Any], h: int) -> bytes:
    """Host ``h``'s conninfo: the shared DSN, or with a ``role_secret`` its own role and
    password (tests/bench/fleet_roles.py: one login role per host)."""
    if args.get("role_secret") is None:
        return args["dsn"].encode()
    from tests.bench.fleet_roles_setup import role_conninfo

    return role_conninfo(args["dsn"], h, args["role_secret"]).encode()


def run_worker(args: dict[str, Any], out: Any, ready: Any, go: Any, start: Any) -> None:
    """One generator process: connect its hosts, say ready, wait for go, run ``args['phase']``,
    put the records on ``out`` (generator CPU counts from go: connecting is not a cycle)."""
    rec: Recording = args["recording"]
    try:
        conns = {h: Conn(h, host_conninfo(args, h)) for h in args["hosts"]}
        drv = Driver(rec, conns)
    except Exception as exc:  # reported by the parent with the worker's message
        ready.put(False)
        out.put({"records": [], "errors": [f"worker: {type(exc).__name__}: {exc}"], "cpu_s": 0.0})
        return
    ready.put(True)
    go.wait()
    cpu0 = time.process_time()
    args["start"] = start.value
    try:
        if args["phase"] in ("populate", "capacity"):
            _saturate(drv, args)
        else:
            _paced(drv, args)
        cpu = time.process_time() - cpu0
        for c in conns.values():
            c.pg.finish()
        out.put({"records": drv.out, "errors": drv.errors[:20], "cpu_s": cpu})
    except Exception as exc:  # reported by the parent with the worker's message
        out.put({"records": [], "errors": [f"worker: {type(exc).__name__}: {exc}"], "cpu_s": 0.0})


def _saturate(drv: Driver, args: dict[str, Any]) -> None:
    """populate: every host's first cycle; capacity: steady cycles back to back until
    ``probe_s`` is over (or ``count`` cycles ran), ``inflight`` at once (the pool's
    server connections are the real limit)."""
    hosts, limit = args["hosts"], args["inflight"]
    kind = "first" if args["phase"] == "populate" else "steady"
    end = time.time() + args.get("probe_s", 1e9)
    total = len(hosts) if kind == "first" else args.get("count")
    n, k0 = 0, args.get("k0", 1)

    def more() -> bool:
        return n < total if total is not None else time.time() < end

    while more():
        while drv.inflight < limit and more():
            h = hosts[n % len(hosts)]
            drv.start(drv.conns[h], kind, k0 + n // len(hosts), time.time())
            n += 1
        drv.poll(1.0)
    drv.drain(time.time() + 600)


def _paced(drv: Driver, args: dict[str, Any]) -> None:
    """Each host at start + interval * (h / m + k): its own slot, like a fleet of timers."""
    start, interval, m, dur = args["start"], args["interval"], args["m"], args["duration_s"]
    idle_pct = args.get("idle_percent", 0)
    slots: list[tuple[float, int, int]] = []
    for h in args["hosts"]:
        k = 0
        while (due := start + interval * (h / m + k)) < start + dur:
            slots.append((due, h, k))
            k += 1
    heapq.heapify(slots)
    k0 = args.get("k0", 1)
    while slots:
        now = time.time()
        while slots and slots[0][0] <= now:
            due, h, k = heapq.heappop(slots)
            # idle_percent of the cycles change nothing; the rest move 10% of the counters
            kind = "idle" if (h * 7 + k) % 100 < idle_pct else "steady"
            drv.start(drv.conns[h], kind, k0 + k, due)
        if slots:
            drv.poll(slots[0][0] - time.time())
    drv.drain(time.time() + 600)
