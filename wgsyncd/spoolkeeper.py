"""The daemon's side of the spool: open it, keep a cycle that could not be written, replay.

Kept out of daemon.py so the loop stays thin: the daemon says "this cycle was
read" (hold), "the database failed" (keep_pending), and "connected, about to
write" (replay); this class decides what goes to the spool and logs what fails,
once per change.
"""

from __future__ import annotations

import datetime
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from wgsyncd import config as config_mod
from wgsyncd import heartbeat

log = logging.getLogger("wgsyncd.spool")


class SpoolKeeper:
    """The spool (opened on first use) and the cycle read but not yet written."""

    def __init__(self) -> None:
        self.spool: Any = None  # spool.Spool
        self.error: str | None = None  # why the spool could not be opened or written
        self.pending: tuple[Any, uuid.UUID, datetime.datetime] | None = None

    def open(self, cfg: config_mod.Config) -> Any:
        """The spool, or None when it is off (daemon.spool_max_mb = 0) or cannot be opened."""
        if self.spool is not None or cfg.daemon.spool_max_mb <= 0:
            return self.spool
        from wgsyncd import spool

        try:
            self.spool = spool.Spool(
                cfg.daemon.state_dir, int(cfg.daemon.spool_max_mb * 1e6), cfg.daemon.spool_max_age
            )
        except spool.SpoolError as exc:
            self._problem(str(exc))
        return self.spool

    def close(self) -> None:
        """Close the file (a reload reopens it with the new directory and bounds)."""
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def _problem(self, error: str | None) -> None:
        """Log a spool failure once per change (an error: cycles are being lost)."""
        if error and error != self.error:
            log.error("%s; cycles read while the database is down are lost", error)
        elif not error and self.error:
            log.warning("the spool is writable again")
        self.error = error

    def hold(self, state: Any, sync_id: uuid.UUID, started: datetime.datetime) -> None:
        """This cycle was read; it goes to the spool if it is not written."""
        self.pending = (state, sync_id, started)

    def written(self) -> None:
        """The held cycle is in the database."""
        self.pending = None

    def keep_pending(self, cfg: config_mod.Config) -> None:
        """Append the held cycle to the spool (best effort, logged); a replay skips it if it was written."""
        pending, self.pending = self.pending, None
        spool = self.open(cfg) if pending is not None else None
        if spool is None or pending is None:
            return
        from wgsyncd.spool import SpoolError

        state, sync_id, started = pending
        try:
            spool.append(state, sync_id, started, cfg.recovery_public_key)
        except SpoolError as exc:
            self._problem(str(exc))
            return
        self._problem(None)

    def replay(
        self,
        cfg: config_mod.Config,
        conn: Any,
        phase: Callable[[str], None],
        progress: Callable[[], None],
        memo: Any = None,
    ) -> int:
        """Write what the spool holds, oldest first, before the live cycle (DB errors propagate).

        ``memo``: the daemon's memo.Memo, so replay signs with the same signer as the live cycle.
        """
        spool = self.open(cfg)
        if spool is None or not spool.depth().cycles:
            return 0
        from wgsyncd import cycle
        from wgsyncd import spool as spool_mod

        def write(state: Any, entry: Any) -> None:
            cycle.write_state(
                cfg,
                conn,
                state,
                entry.sync_id,
                entry.started_at,
                as_of=state.collected_at,
                recovery_public_key=entry.recovery_key or "",
                prune=False,
                memo=memo,
                build_ahead=False,  # a replay is not timed: one transient at a time (store.write_cycle)
            )

        phase("replaying")
        t0 = time.monotonic()
        done = spool_mod.replay(spool, conn, cfg.host_id, write, progress)
        log.info("replayed %d spooled cycle(s) in %.1f s", done, time.monotonic() - t0)
        phase("database")
        return done

    def fill(self, beat: heartbeat.Heartbeat) -> None:
        """Copy the spool's depth into the heartbeat (what status --local and metrics show)."""
        if self.spool is None:
            return
        try:
            depth = self.spool.depth()
        except Exception as exc:  # a broken spool file must not break the heartbeat
            log.debug("spool depth unavailable: %s", exc)
            return
        beat.spool_depth, beat.spool_bytes, beat.spool_oldest = depth.cycles, depth.bytes, depth.oldest
        beat.spool_dropped = self.spool.dropped
