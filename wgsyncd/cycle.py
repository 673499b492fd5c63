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
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from wgsyncd import __version__, valuepool
from wgsyncd.config import Config
from wgsyncd.memo import Memo
from wgsyncd.merge import merge
from wgsyncd.state import HostState, Source, SourceError, SourceResult, seal

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


def read_sources(cfg: Config, memo: Memo | None = None, *, in_turn: bool = False) -> list[SourceResult]:
    """Read every enabled source, concurrently: the conf parse overlaps wgrest's HTTP wait.

    Imports are local so a missing optional library hits one source only. Results come
    back in a fixed order (kernel, conf, wgrest) whatever finishes first, sealed: ``memo``
    (the caller's between-cycle memory, none = a throwaway one) hands them back next cycle.

    ``in_turn``: one source after the other instead (the daemon's first read). Why: a
    cold read parses everything, and three parses at once stack their transients (at
    10,000 peers 10 + 22 + 6 MiB); the heap they grow stays with the process, pinned by
    what the cycle keeps. Measured (tests/bench/memory.py phases): the daemon's RSS after
    its cycles 78 -> 74 MiB over a synced database, 85 -> 79 over an empty one, for some
    0.2 s more in its first cycle only. A one-shot sync keeps the concurrency: its time
    is what counts, and it exits.
    """
    memo = (memo or Memo()).for_host(cfg.host_id)
    want = interface_filter(cfg)
    readers: list[tuple[Source, Callable[[], SourceResult]]] = []
    if cfg.kernel.enabled:
        from wgsyncd.sources import kernel

        readers.append((Source.KERNEL, lambda: kernel.read(cfg.kernel, want, memo.uapi)))
    if cfg.conf.enabled:
        from wgsyncd.sources import conffiles

        readers.append((Source.CONF, lambda: conffiles.read(cfg.conf, want, memo.conf)))
    if cfg.wgrest.enabled:
        from wgsyncd.sources import wgrest

        answered = memo.wgrest_answered
        readers.append(
            (
                Source.WGREST,
                lambda: wgrest.read(cfg.wgrest, want, cfg.daemon.state_dir, memo.wgrest, answered),
            )
        )
    with valuepool.pooled():  # the sources' copies of a peer share equal values
        if len(readers) < 2 or in_turn:
            return _sealed([_read_source(src, fn) for src, fn in readers])
        pool = ThreadPoolExecutor(max_workers=len(readers), thread_name_prefix="wgsyncd-source")
        try:
            futures = [pool.submit(_read_source, src, fn) for src, fn in readers]
            return _sealed([f.result() for f in futures])
        finally:
            # a stop signal unwinding this cycle must not wait here for slow readers;
            # each is bounded by its own timeout anyway
            pool.shutdown(wait=False, cancel_futures=True)


def _sealed(results: list[SourceResult]) -> list[SourceResult]:
    """Seal what the sources read: the memo may hand these very objects back next cycle."""
    for result in results:
        for iface in result.interfaces.values():
            seal(iface)
    return results


def merge_sources(
    cfg: Config, results: list[SourceResult], collected_at: datetime, memo: Memo | None = None
) -> HostState:
    """merge() with the caller's memo for the host (same result, less work when little changed)."""
    memo = (memo or Memo()).for_host(cfg.host_id)  # a new host_id: the old memory goes
    state = merge(cfg.host_id, cfg.hostname, results, collected_at, memo.merge)
    for iface in state.interfaces.values():
        seal(iface)  # merged peers are kept in memo.merge and reused as they are
    return state


def _netdevs(want: Callable[[str], bool]) -> list[str]:
    """Network interfaces of this namespace the filter keeps (the candidates for identity)."""
    import socket

    try:
        return [name for _idx, name in socket.if_nameindex() if want(name)]
    except OSError:
        return []


def collect(cfg: Config, memo: Memo | None = None, *, in_turn: bool = False) -> HostState:
    """Read and merge: the whole host's state as of now, without touching the database.

    ``memo``: the daemon's (or one `sync` run's) between-cycle memory; none = a throwaway one.
    ``in_turn``: read the sources one after the other (see read_sources).
    """
    from wgsyncd.sources import identity

    collected_at = datetime.now(UTC)
    want = interface_filter(cfg)
    before = identity.identities(_netdevs(want)) if cfg.kernel.enabled else {}
    memo = memo or Memo()
    state = merge_sources(cfg, read_sources(cfg, memo, in_turn=in_turn), collected_at, memo)
    if before:
        state.interface_ids = identity.stable(before, identity.identities(state.interfaces))
    for err in state.errors:
        log.error("%s", err, extra={"wg_interface": err.interface})
    return state


# a long-running loop prunes at most this often (seconds), unless a backlog is left
PRUNE_EVERY = 3600.0
# how far before each boundary an hourly prune looks (two prune intervals; the daily whole
# pass takes in the rest)
FOLD_MARGIN = timedelta(seconds=2 * PRUNE_EVERY)
# sync_status rows are thinned this long after the spool could last replay their cycle
STATUS_MARGIN = timedelta(days=1)
# a whole-history pass at least this often: what a windowed one cannot see (a host down
# longer than its look-back, a database switched under the same DSN) is made hourly too
FULL_FOLD_EVERY = timedelta(days=1)


def _prune(conn, cfg: Config, now: datetime, memo: Memo) -> None:
    """Keep this host's history bounded; a failed prune costs a log line, not the cycle.

    Off the hot path: a host prunes once an hour (every cycle while a full batch comes
    back, i.e. a backlog is being worked off), the daemon and timer mode alike (its
    view file keeps when; synccache.py). Past ``traffic_detail_hours`` history becomes
    hourly (store/retention.py): the first time for a host over its whole history (rows
    from before schema 10), then over the last FOLD_MARGIN before the boundary (what an
    hourly prune has not seen yet), and over the whole history again once a day
    (FULL_FOLD_EVERY), which takes in what the short look-back cannot: a spool replay's
    old rows, what crossed the boundary while a timer-mode host was off. The short one
    keeps an hourly prune cheap (a few hour rows a peer, not a week of them); a whole
    pass walks the traffic oldest first, a day per statement, over as many cycles as it
    takes (memo.fold_from: where it goes on; store/retention.py).
    """
    from wgsyncd import store
    from wgsyncd.store.retention import Hourly

    if not memo.prune_due(cfg.host_id, now.timestamp(), PRUNE_EVERY):
        return
    db = cfg.database
    last_full = memo.folded.get(cfg.host_id)
    full = last_full is None or now.timestamp() - last_full >= FULL_FOLD_EVERY.total_seconds()
    hourly = None
    if db.traffic_detail_hours > 0:
        spool = timedelta(seconds=cfg.daemon.spool_max_age)
        detail = timedelta(hours=db.traffic_detail_hours)
        hourly = Hourly(
            traffic_after=detail,
            # a replayed cycle must still find its own status row: nothing written twice
            status_after=max(detail, spool + STATUS_MARGIN),
            lookback=None if full else FOLD_MARGIN,
            resume=_epoch_time(memo.fold_from.get(cfg.host_id)) if full else None,
        )
    try:
        pruned = store.prune(conn, cfg.host_id, now, db.history_days, hourly)
    except store.StoreError as exc:
        log.warning("history pruning skipped: %s", exc)
        return
    if full and not pruned.backlog():
        memo.folded[cfg.host_id] = now.timestamp()
        memo.fold_from.pop(cfg.host_id, None)
    elif pruned.resume is not None:  # a whole pass (only those walk) goes on where it stopped
        memo.fold_from[cfg.host_id] = pruned.resume.timestamp()
    if pruned.backlog():
        memo.pruned.pop(cfg.host_id, None)
    else:
        memo.pruned[cfg.host_id] = now.timestamp()
    if pruned.traffic or pruned.status:
        log.info(
            "pruned %d traffic and %d status rows older than %g days",
            pruned.traffic,
            pruned.status,
            db.history_days,
        )
    if pruned.folded or pruned.thinned:
        log.info(
            "history made hourly: %d traffic rows folded, %d status rows thinned",
            pruned.folded,
            pruned.thinned,
        )


def _epoch_time(at: float | None) -> datetime | None:
    """An epoch time kept in the memo, back as an aware datetime (None stays None)."""
    return None if at is None else datetime.fromtimestamp(at, UTC)


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
    cfg: Config,
    conn,
    sync_id: uuid.UUID | None = None,
    progress: Callable[[str], None] | None = None,
    memo: Memo | None = None,
    collected: Callable[[], None] | None = None,
) -> CycleReport:
    """Collect and write one cycle over ``conn``; raises store.StoreError if the DB fails.

    ``sync_id`` lets the daemon use the same id in its journal fields as in sync_status;
    ``progress`` (the CLI on a terminal) is told each step as it starts; ``memo`` is the
    run's between-cycle memory (the timer-mode cache loads and saves it around this);
    ``collected`` is called once the sources are read and merged, before the write.
    """
    from wgsyncd import signing

    step = progress or (lambda _text: None)
    sync_id = sync_id or uuid.uuid4()
    started = datetime.now(UTC)
    t0 = time.monotonic()
    memo = (memo or Memo()).for_host(cfg.host_id)
    # SigningError: no cycle without a key
    signer = signing.signer_for(cfg.daemon.state_dir, cfg.host_id, memo.signers)
    step("reading the kernel, conf files and wgrest")
    state = collect(cfg, memo)
    if collected is not None:
        collected()
    peers = sum(len(i.peers) for i in state.interfaces.values())
    step(f"writing {len(state.interfaces)} interfaces, {peers} peers to the database")
    return write_state(cfg, conn, state, sync_id, started, t0, signer=signer, memo=memo)


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
    memo: Memo | None = None,
    build_ahead: bool = True,
) -> CycleReport:
    """Write one collected state (live, or replayed from the spool) within the DB deadline.

    A server that stops answering fails this with a StoreError after
    statement_timeout + a margin instead of hanging the loop (store/deadline.py).
    ``build_ahead``: see store.write_cycle (the daemon passes False).
    """
    from wgsyncd import signing, store
    from wgsyncd.store import deadline

    t0 = time.monotonic() if t0 is None else t0
    # every version a host writes is signed, live or replayed (SigningError: no write without a key)
    memo = (memo or Memo()).for_host(cfg.host_id)
    signer = signer or signing.signer_for(cfg.daemon.state_dir, state.host_id, memo.signers)
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
            build_ahead=build_ahead,
            **({"as_of": as_of} if as_of is not None else {}),
        )
        if prune:
            _prune(conn, cfg, started, memo)
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
