"""`wgsyncd run`: the loop that keeps the database in step with the host.

One cycle every ``daemon.interval`` seconds (+- jitter, so a fleet restarted
together does not hit the database in lockstep); exponential backoff with a cap
while the database is unreachable; a failing source makes a cycle partial, never
the daemon dead.

systemd sees the loop through sd_notify: READY=1 once the config is valid and
the first cycle has been tried, STATUS= after every cycle, WATCHDOG=1 only from
the loop itself after real progress (a cycle ended, a backoff step taken, a
sleep slice elapsed) -- never from a side thread, which would keep pinging while
the loop hangs. SIGHUP reloads the config (RELOADING=1 ... READY=1; a broken
file keeps the old config). SIGTERM/SIGINT abandon a running cycle at once: the
exception raised in the signal handler unwinds the cycle, the connection is
closed without COMMIT (the server rolls the transaction back), STOPPING=1 is
sent and the process exits 0.

Timeouts vs. the watchdog: we WARN (naming the key) when a configured timeout is
not below half of WatchdogSec, and do not clamp it: the operator's value stays
in force and a call that really hangs that long is what the watchdog is for.
"""

from __future__ import annotations

import datetime
import gc
import logging
import random
import signal
import sys
import time
import uuid
from typing import Any

from wgsyncd import config as config_mod
from wgsyncd import gcpolicy, heartbeat, logs, malloc
from wgsyncd.daemonkit import TIMEOUT_KEYS as TIMEOUT_KEYS  # re-exported: tests and tools use daemon.X
from wgsyncd.daemonkit import (
    ConnectFn,
    CycleAbandoned,
    Notifier,
    Report,
    SyncFn,
    _close_quietly,
    _db_errors,
    _default_connect,
    _Wake,
    apply_config_side_effects,
    backoff_delay,
    load_config,
    next_interval,
    record_failure,
    signing_key_ready,
    watchdog_interval,
    write_beat,
)
from wgsyncd.daemonkit import timeout_warnings as timeout_warnings
from wgsyncd.memo import Memo
from wgsyncd.spoolkeeper import SpoolKeeper

log = logging.getLogger("wgsyncd.daemon")

EXIT_OK = 0
EXIT_CONFIG = 78  # EX_CONFIG: the unit's RestartPreventExitStatus, so a bad file does not restart-loop


class Daemon:
    """The loop's state: config, connection, failure count, signal flags."""

    def __init__(
        self,
        cfg: config_mod.Config,
        *,
        config_path: str | None = None,
        log_level: str | None = None,
        notifier: Notifier | None = None,
        sync: SyncFn | None = None,
        connect: ConnectFn | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.log_level_override = log_level
        self.notify = notifier or Notifier()
        self.sync = sync  # None: the real cycle (read the host, then write it)
        self.connect = connect or _default_connect
        self.rng = rng or random.Random()
        self.watchdog = watchdog_interval()
        self.conn: Any = None
        self.failures = 0
        self.cycles = 0
        self.stop_requested = False
        self.reload_requested = False
        self._in_cycle = False
        self._abandoning = False
        self._stop_signal = "SIGTERM"  # the name a retried abandon reports (see _on_unraisable)
        self._previous_unraisable = sys.unraisablehook
        self._t0 = time.monotonic()
        self.db_failing_since: float | None = None  # unix time of the first failed DB cycle in a row
        self.last_beat: heartbeat.Heartbeat | None = None
        self.beat_error: str | None = None  # why the last heartbeat could not be written
        self.spool = SpoolKeeper()
        self.memo = Memo()  # between-cycle memory (wgsyncd/memo.py); a new host_id empties it
        self.read_once = False  # a cycle has read the sources (cycle.read_sources: in_turn)

    # -- signals -----------------------------------------------------------------
    def _on_stop(self, signum: int, _frame: object) -> None:
        """SIGTERM/SIGINT: stop; a running cycle is abandoned right now, not after it ends."""
        self.stop_requested = True
        self._stop_signal = signal.Signals(signum).name
        self._abandon()

    def _abandon(self, *_args: object) -> None:
        """Unwind a running cycle (once); also SIGALRM's handler when a first try was swallowed."""
        if self._in_cycle and not self._abandoning:
            self._abandoning = True
            raise CycleAbandoned(self._stop_signal)

    def _on_unraisable(self, what: Any) -> None:
        """The abandon landed in a finalizer (a ``__del__``, a generator closed by the collector),
        which swallows every exception: the cycle would run on to its end and the log would
        show a traceback. Try again in a millisecond instead, from SIGALRM; other unraisable
        exceptions go to the previous hook."""
        if isinstance(what.exc_value, CycleAbandoned):
            self._abandoning = False
            signal.setitimer(signal.ITIMER_REAL, 0.001)
            return
        self._previous_unraisable(what)

    def _on_hup(self, _signum: int, _frame: object) -> None:
        """SIGHUP: reload the config once the current cycle (if any) is done."""
        self.reload_requested = True

    def _install_signals(self) -> None:
        """Handlers that only set flags (and unwind a running cycle on stop)."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGALRM, self._abandon)
        self._previous_unraisable = sys.unraisablehook
        sys.unraisablehook = self._on_unraisable

    # -- one cycle ---------------------------------------------------------------
    def run_cycle(self) -> float:
        """Read the host, then connect if needed and write; report; returns the wait before the next one."""
        sync_id = uuid.uuid4()
        started = datetime.datetime.now(datetime.UTC)
        self._t0 = time.monotonic()
        errors = _db_errors()
        with logs.context(sync_id=sync_id.hex):
            self._in_cycle = True
            try:
                report = self._cycle(sync_id, started)
            except CycleAbandoned:
                self.spool.keep_pending(self.cfg)  # read, not written (replay skips it if it was)
                raise
            except errors as exc:
                self._in_cycle = False
                self.spool.keep_pending(self.cfg)
                return self._db_failed(exc, sync_id, started)
            except Exception as exc:  # a bug must cost one cycle, not the daemon
                self._in_cycle = False
                log.exception("cycle crashed: %s", type(exc).__name__)
                return self._cycle_failed(f"cycle crashed: {type(exc).__name__}; see the journal")
            finally:
                self._in_cycle = False
            self.cycles += 1
            return self._cycle_done(report)

    def _cycle(self, sync_id: uuid.UUID, started: datetime.datetime) -> Report:
        """One cycle's work; DB errors propagate to run_cycle."""
        if self.sync is not None:  # an injected cycle (tests): connect, then hand over
            self._phase("database")
            if self.conn is None:
                self.conn = self.connect(self.cfg)
            return self.sync(self.cfg, self.conn, sync_id)
        from wgsyncd import cycle

        t0 = time.monotonic()
        self._phase("reading")
        # the first read parses everything: one source at a time keeps the heap it grows small
        state = cycle.collect(self.cfg, self.memo, in_turn=not self.read_once)
        self.read_once = True
        self.spool.hold(state, sync_id, started)
        self._phase("database")
        if self.conn is None:
            self.conn = self.connect(self.cfg)
        self.spool.replay(self.cfg, self.conn, self._phase, self._replay_progress, self.memo)
        report = cycle.write_state(
            self.cfg, self.conn, state, sync_id, started, t0, memo=self.memo, build_ahead=False
        )
        self.spool.written()
        return report

    def _replay_progress(self) -> None:
        """Each replayed cycle is progress: ping the watchdog, and now and then say so in the file
        (a long replay must not look like a stuck database to `status --local`)."""
        if self.watchdog:
            self.notify.send("WATCHDOG=1")
        beat = self.last_beat
        if beat is not None and beat.phase_since is not None and time.time() - beat.phase_since > 5.0:
            self._phase("replaying")

    def _cycle_done(self, report: Report) -> float:
        """Tell systemd and the log what the cycle did; pick the next wait."""
        summary = report.summary()  # the source errors themselves were logged by the cycle
        if report.status == "failed":
            return self._cycle_failed(summary)
        self.failures = 0
        self.db_failing_since = None
        level = logging.INFO if report.status == "ok" else logging.WARNING
        log.log(level, "%s", summary, extra={"sync_status": report.status})
        self._beat(report.status, summary, report)
        self.notify.send(f"STATUS={summary}{self._status_suffix()}", "WATCHDOG=1")
        return next_interval(self.cfg.daemon, self.rng)

    def _status_suffix(self) -> str:
        """What STATUS= adds to the cycle summary: an unwritable state directory or spool."""
        text = f"; state dir not writable: {self.beat_error}" if self.beat_error else ""
        if self.spool.error:
            text += "; spool failing"
        return text

    def _phase(self, phase: str) -> None:
        """Say in last-cycle.json what the loop is doing now, so a hang can be placed."""
        if self.last_beat is None:
            return  # nothing to update before the first cycle ended
        self.last_beat.phase = phase
        self.last_beat.phase_since = time.time()
        self._write_beat()

    def _beat(self, status: str, summary: str, report: Report | None = None) -> None:
        """Leave last-cycle.json for `wgsyncd status --local` (a failure is a warning, once per
        change), then the metrics and the persist snapshot (aftercycle)."""
        from wgsyncd import aftercycle, cycle

        aftercycle.after_cycle(self.cfg, status, report, time.monotonic() - self._t0)
        self.last_beat = heartbeat.Heartbeat(
            time.time(),
            status,
            summary,
            self.cfg.daemon.interval,
            phase="idle",
            phase_since=time.time(),
            db_budget=cycle.db_budget(self.cfg),
            db_failing_since=self.db_failing_since,
        )
        self.spool.fill(self.last_beat)
        self._write_beat()

    def _write_beat(self) -> None:
        """Write the current heartbeat; log a warning when that starts or stops failing."""
        assert self.last_beat is not None
        self.beat_error = write_beat(self.cfg.daemon.state_dir, self.last_beat, self.beat_error)

    def _db_failed(self, exc: BaseException, sync_id: uuid.UUID, started: datetime.datetime) -> float:
        """The DB is down or refused a write: record it if the DB still answers, then back off."""
        reason = logs.redactor().redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        alive = self.conn is not None and not self.conn.closed and not getattr(self.conn, "broken", False)
        if alive:
            self._record_failure(sync_id, started, reason)
        _close_quietly(self.conn)
        self.conn = None
        self.failures += 1
        if self.db_failing_since is None:
            self.db_failing_since = time.time()
        delay = backoff_delay(self.cfg.daemon, self.failures)
        if self.spool.spool is not None:  # keep reading the host every interval; the spool keeps it
            delay = min(delay, next_interval(self.cfg.daemon, self.rng))
        what = "DB write failed" if alive else "DB unreachable"
        log.error(
            "%s (%s); retry %d in %.0f s", what, reason, self.failures, delay, extra={"sync_status": "failed"}
        )
        self._beat("failed", f"{what} ({reason})")
        spooled = self.last_beat.spool_text() if self.last_beat else ""
        self.notify.send(
            f"STATUS={what}, retry in {delay:.0f} s{spooled}{self._status_suffix()}", "WATCHDOG=1"
        )
        return delay

    def _record_failure(self, sync_id: uuid.UUID, started: datetime.datetime, reason: str) -> None:
        """A failed row in sync_status (daemonkit.record_failure), abandoned by SIGTERM like a cycle."""
        self._in_cycle = True
        try:
            if not self.stop_requested:
                record_failure(self.conn, self.cfg, sync_id, started, reason)
        finally:
            self._in_cycle = False

    def _cycle_failed(self, summary: str) -> float:
        """A cycle that ended without a write: back off like a DB failure, drop the connection."""
        _close_quietly(self.conn)
        self.conn = None
        self.failures += 1
        delay = backoff_delay(self.cfg.daemon, self.failures)
        log.error("%s; retry in %.0f s", summary, delay, extra={"sync_status": "failed"})
        self._beat("failed", summary)
        self.notify.send(f"STATUS={summary}; retry in {delay:.0f} s{self._status_suffix()}", "WATCHDOG=1")
        return delay

    # -- reload ------------------------------------------------------------------
    def reload(self) -> None:
        """Re-read the config; a broken one is logged (naming the key) and the old one kept."""
        self.reload_requested = False
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", "STATUS=reloading config")
        try:
            new = load_config(self.config_path)
        except config_mod.ConfigError as exc:
            log.error("config reload failed, keeping the running config: %s", exc)
            self.notify.send("READY=1", f"STATUS=config reload failed, kept the old one: {exc}")
            return
        if new.database != self.cfg.database:
            _close_quietly(self.conn)
            self.conn = None
        if new.daemon != self.cfg.daemon:
            self.spool.close()  # reopened with the new directory and bounds on next use
        self.cfg = new
        apply_config_side_effects(new, self.log_level_override, self.watchdog)
        log.info("config reloaded from %s", new.source_path or "defaults")
        self.notify.send("READY=1", "STATUS=config reloaded")

    # -- the loop ----------------------------------------------------------------
    def sleep(self, wake: _Wake, seconds: float) -> None:
        """Wait ``seconds`` unless a signal comes; ping the watchdog every half WatchdogSec meanwhile."""
        deadline = time.monotonic() + seconds
        while not (self.stop_requested or self.reload_requested):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            slice_ = min(remaining, self.watchdog / 2) if self.watchdog else remaining
            wake.wait(slice_)
            if self.watchdog and not (self.stop_requested or self.reload_requested):
                self.notify.send("WATCHDOG=1")

    def loop(self) -> int:
        """Cycle, report, sleep, until a stop signal; returns the exit code."""
        wake = _Wake.install()
        self._install_signals()
        try:
            ready = False
            while not self.stop_requested:
                try:
                    with gcpolicy.daemon_cycle():
                        delay = self.run_cycle()
                except CycleAbandoned as exc:
                    log.warning(
                        "%s during a cycle: abandoned it; its uncommitted transaction is rolled back", exc
                    )
                    break
                if not ready:
                    self.notify.send("READY=1")
                    ready = True
                settle_heap()
                self.sleep(wake, delay)
                if self.reload_requested and not self.stop_requested:
                    self.reload()
        finally:
            _close_quietly(self.conn)
            self.conn = None
            self.spool.close()
            self.notify.send("STOPPING=1", "STATUS=stopping")
            signal.setitimer(signal.ITIMER_REAL, 0)  # a retried abandon has nothing left to unwind
            wake.close()
        log.info("stopped after %d cycle(s)", self.cycles)
        return EXIT_OK


SETTLE_EVERY = 3600.0  # seconds between two heap settles (see settle_heap)
_next_settle = 0.0


def settle_heap() -> bool:
    """Between cycles, at most hourly: collect, then freeze what survived. True if it ran.

    Why: a 10,000-peer host keeps about a million long-lived objects (the last
    cycle's state and the memos that make the next cycle cheap), and the cyclic
    collector would scan them all again about every other cycle (0.05-0.09 s of a
    0.2 s cycle). Frozen objects are still freed by reference counting as soon as
    they are dropped; only cyclic garbage among them waits for the next settle.
    """
    global _next_settle
    now = time.monotonic()
    if now < _next_settle:
        return False
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    _next_settle = now + SETTLE_EVERY
    return True


def run(
    config_path: str | None,
    *,
    log_level: str | None = None,
    json_logs: bool = False,
    sync: SyncFn | None = None,
    connect: ConnectFn | None = None,
) -> int:
    """Entry point of `wgsyncd run`; ``sync``/``connect`` replace the real cycle in tests."""
    logs.setup(log_level or "info", json_logs=json_logs)
    malloc.tune()  # before any thread or big buffer: see wgsyncd/malloc.py
    notifier = Notifier()
    try:
        cfg = load_config(config_path)
    except config_mod.ConfigError as exc:
        log.error("config: %s", exc)
        notifier.send(f"STATUS=config error: {exc}")
        return EXIT_CONFIG
    watchdog = watchdog_interval()
    apply_config_side_effects(cfg, log_level, watchdog)
    if not signing_key_ready(cfg, notifier):  # a broken key file stops the daemon, not every cycle
        return EXIT_CONFIG
    log.info(
        "starting: host_id %s, interval %g s, watchdog %s",
        cfg.host_id,
        cfg.daemon.interval,
        f"{watchdog:g} s" if watchdog else "off",
    )
    daemon = Daemon(
        cfg, config_path=config_path, log_level=log_level, notifier=notifier, sync=sync, connect=connect
    )
    return daemon.loop()
