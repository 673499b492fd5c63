"""One cycle: read the three sources, merge, and (for sync) write to the store.

The CLI and the daemon both call this, so `wgsyncd sync` and one turn of
`wgsyncd run` are the same code path. A source that fails makes the cycle
partial; only the database failing makes it fail.
"""

from __future__ import annotations

import fnmatch
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from wgsyncd import __version__
from wgsyncd.config import Config
from wgsyncd.merge import MergeMemo, merge
from wgsyncd.state import HostState, Source, SourceError, SourceResult

if TYPE_CHECKING:
    from wgsyncd.signing import Signer

log = logging.getLogger(__name__)


def interface_filter(cfg: Config) -> Callable[[str], bool]:
    """The `interfaces` / `exclude_interfaces` globs as one predicate every source applies."""
    include, exclude = cfg.interfaces, cfg.exclude_interfaces

    def want(name: str) -> bool:
        if include and not any(fnmatch.fnmatchcase(name, g) for g in include):
            return False
        return not any(fnmatch.fnmatchcase(name, g) for g in exclude)

    return want


def _read_source(source: Source, reader: Callable[[], SourceResult]) -> SourceResult:
    """Run one source; an unexpected crash becomes a whole-source error, not a dead cycle."""
    try:
        return reader()
    except Exception as exc:  # a bug in one source must not stop the others
        log.exception("source %s crashed", source)
        return SourceResult(
            source, errors=[SourceError(source, str(source), f"crashed: {type(exc).__name__}")]
        )


def read_sources(cfg: Config) -> list[SourceResult]:
    """Read every enabled source, concurrently: the conf parse overlaps wgrest's HTTP wait.

    Imports are local so a missing optional library hits one source only. Results come
    back in a fixed order (kernel, conf, wgrest) whatever finishes first.
    """
    want = interface_filter(cfg)
    readers: list[tuple[Source, Callable[[], SourceResult]]] = []
    if cfg.kernel.enabled:
        from wgsyncd.sources import kernel

        readers.append((Source.KERNEL, lambda: kernel.read(cfg.kernel, want)))
    if cfg.conf.enabled:
        from wgsyncd.sources import conffiles

        readers.append((Source.CONF, lambda: conffiles.read(cfg.conf, want)))
    if cfg.wgrest.enabled:
        from wgsyncd.sources import wgrest

        readers.append((Source.WGREST, lambda: wgrest.read(cfg.wgrest, want, cfg.daemon.state_dir)))
    if len(readers) < 2:
        return [_read_source(src, fn) for src, fn in readers]
    pool = ThreadPoolExecutor(max_workers=len(readers), thread_name_prefix="wgsyncd-source")
    try:
        futures = [pool.submit(_read_source, src, fn) for src, fn in readers]
        return [f.result() for f in futures]
    finally:
        # a stop signal unwinding this cycle must not wait here for slow readers;
        # each is bounded by its own timeout anyway
        pool.shutdown(wait=False, cancel_futures=True)


# host_id -> the previous cycle's merge, so a long-running loop merges only what changed
_MERGE_MEMOS: dict[str, MergeMemo] = {}


def merge_sources(cfg: Config, results: list[SourceResult], collected_at: datetime) -> HostState:
    """merge() with this process's memo for the host (same result, less work when little changed)."""
    memo = _MERGE_MEMOS.get(cfg.host_id)
    if memo is None:  # a new host_id (first cycle, or a reload changed it): drop the old one
        _MERGE_MEMOS.clear()
        memo = _MERGE_MEMOS[cfg.host_id] = MergeMemo()
    return merge(cfg.host_id, cfg.hostname, results, collected_at, memo)


def _netdevs(want: Callable[[str], bool]) -> list[str]:
    """Network interfaces of this namespace the filter keeps (the candidates for identity)."""
    import socket

    try:
        return [name for _idx, name in socket.if_nameindex() if want(name)]
    except OSError:
        return []


def collect(cfg: Config) -> HostState:
    """Read and merge: the whole host's state as of now, without touching the database."""
    from wgsyncd.sources import identity

    collected_at = datetime.now(UTC)
    want = interface_filter(cfg)
    before = identity.identities(_netdevs(want)) if cfg.kernel.enabled else {}
    state = merge_sources(cfg, read_sources(cfg), collected_at)
    if before:
        state.interface_ids = identity.stable(before, identity.identities(state.interfaces))
    for err in state.errors:
        log.error("%s", err, extra={"wg_interface": err.interface})
    return state


# a long-running loop prunes at most this often (seconds), unless a backlog is left
PRUNE_EVERY = 3600.0
_next_prune: dict[str, float] = {}  # host_id -> monotonic time of the next prune


def _prune(conn, cfg: Config, now: datetime) -> None:
    """Keep this host's history bounded; a failed prune costs a log line, not the cycle.

    Off the hot path: the daemon prunes once an hour (every cycle while a full batch
    comes back, i.e. a backlog is being worked off); a one-shot `sync` always prunes.
    """
    from wgsyncd import store
    from wgsyncd.store.retention import BATCH

    if time.monotonic() < _next_prune.get(cfg.host_id, 0.0):
        return
    try:
        pruned = store.prune(conn, cfg.host_id, now, cfg.database.history_days)
    except store.StoreError as exc:
        log.warning("history pruning skipped: %s", exc)
        return
    backlog = max(pruned.traffic, pruned.status) >= BATCH
    _next_prune[cfg.host_id] = 0.0 if backlog else time.monotonic() + PRUNE_EVERY
    if pruned.traffic or pruned.status:
        log.info(
            "pruned %d traffic and %d status rows older than %g days",
            pruned.traffic,
            pruned.status,
            cfg.database.history_days,
        )


@dataclass
class CycleReport:
    """What one cycle did; its summary is the daemon's STATUS= line."""

    sync_id: uuid.UUID
    started_at: datetime
    status: str  # ok | partial | failed
    interfaces: int = 0
    peers: int = 0
    duration: float = 0.0
    rows_written: int = 0
    drift: int = 0
    errors: list[str] = field(default_factory=list)
    # for metrics/persist (wgsyncd/aftercycle.py): the write's round trips and the state it wrote
    round_trips: int = 0
    state: HostState | None = field(default=None, repr=False, compare=False)

    def summary(self) -> str:
        """One line for STATUS= and the log: counts, time, DB state, first error."""
        if self.status == "failed":
            return f"sync failed after {self.duration:.2f} s: {self.errors[0] if self.errors else 'unknown'}"
        text = (
            f"synced {self.interfaces} interface{'s' * (self.interfaces != 1)}, "
            f"{self.peers} peer{'s' * (self.peers != 1)} in {self.duration:.2f} s; DB ok"
        )
        if self.rows_written:
            text += f", {self.rows_written} rows written"
        if self.status == "partial":
            text += f"; partial: {len(self.errors)} source error{'s' * (len(self.errors) != 1)}"
        return text


def sync_once(
    cfg: Config, conn, sync_id: uuid.UUID | None = None, progress: Callable[[str], None] | None = None
) -> CycleReport:
    """Collect and write one cycle over ``conn``; raises store.StoreError if the DB fails.

    ``sync_id`` lets the daemon use the same id in its journal fields as in sync_status;
    ``progress`` (the CLI on a terminal) is told each step as it starts.
    """
    from wgsyncd import signing

    step = progress or (lambda _text: None)
    sync_id = sync_id or uuid.uuid4()
    started = datetime.now(UTC)
    t0 = time.monotonic()
    signer = signing.signer_for(cfg.daemon.state_dir, cfg.host_id)  # SigningError: no cycle without a key
    step("reading the kernel, conf files and wgrest")
    state = collect(cfg)
    peers = sum(len(i.peers) for i in state.interfaces.values())
    step(f"writing {len(state.interfaces)} interfaces, {peers} peers to the database")
    return write_state(cfg, conn, state, sync_id, started, t0, signer=signer)


def db_budget(cfg: Config) -> float:
    """The client-side deadline of one database cycle (store/deadline.py)."""
    from wgsyncd.store import deadline

    return deadline.budget(cfg.database.statement_timeout)


def write_state(
    cfg: Config,
    conn,
    state: HostState,
    sync_id: uuid.UUID,
    started: datetime,
    t0: float | None = None,
    *,
    as_of: datetime | None = None,
    recovery_public_key: str | None = None,
    prune: bool = True,
    signer: Signer | None = None,
) -> CycleReport:
    """Write one collected state (live, or replayed from the spool) within the DB deadline.

    A server that stops answering fails this with a StoreError after
    statement_timeout + a margin instead of hanging the loop (store/deadline.py).
    """
    from wgsyncd import signing, store
    from wgsyncd.store import deadline

    t0 = time.monotonic() if t0 is None else t0
    # every version a host writes is signed, live or replayed (SigningError: no write without a key)
    signer = signer or signing.signer_for(cfg.daemon.state_dir, state.host_id)
    key = recovery_public_key if recovery_public_key is not None else cfg.recovery_public_key
    with deadline.deadline(conn, db_budget(cfg), f"write_cycle for host {state.host_id}"):
        report = store.write_cycle(
            conn,
            state,
            sync_id=sync_id,
            started_at=started,
            agent_version=__version__,
            recovery_public_key=key or None,
            signer=signer,
            machine_fp=cfg.machine_fp,
            **({"as_of": as_of} if as_of is not None else {}),
        )
        if prune:
            _prune(conn, cfg, started)
    return CycleReport(
        sync_id=sync_id,
        started_at=started,
        status="partial" if state.partial else "ok",
        interfaces=len(state.interfaces),
        peers=sum(len(i.peers) for i in state.interfaces.values()),
        duration=time.monotonic() - t0,
        rows_written=report.total_config_rows_written,
        drift=len(state.drift),
        errors=[str(e) for e in state.errors],
        round_trips=report.round_trips,
        state=state,
    )
