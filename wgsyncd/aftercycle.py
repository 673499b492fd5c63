"""What the daemon does with a finished cycle besides the database: metrics and the persist snapshot.

One call from the daemon's loop, so daemon.py stays thin; each part failing costs
a log line, never the cycle (the database write already happened).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from wgsyncd import __version__, metrics
from wgsyncd.config import Config

log = logging.getLogger("wgsyncd.aftercycle")


def facts_from(status: str, report: Any, duration: float) -> metrics.CycleFacts:
    """The metrics' view of a cycle: from the cycle report when there is one, else only the result."""
    state = getattr(report, "state", None)
    errors = Counter(str(e.source) for e in state.errors) if state is not None else Counter()
    return metrics.CycleFacts(
        result=status,
        duration_seconds=getattr(report, "duration", duration) if report is not None else duration,
        rows_written=getattr(report, "rows_written", 0) if report is not None else 0,
        drift=getattr(report, "drift", 0) if report is not None else 0,
        db_round_trips=getattr(report, "round_trips", 0) if report is not None else 0,
        source_errors=dict(errors),
        state=state,
    )


def after_cycle(cfg: Config, status: str, report: Any = None, duration: float = 0.0) -> None:
    """Record the metrics and, with ``[persist] enabled``, keep the running peers' snapshot."""
    facts = facts_from(status, report, duration)
    try:
        metrics.record(
            cfg.daemon.state_dir,
            cfg.metrics.textfile,
            facts,
            cap=cfg.metrics.max_peer_series,
            version=__version__,
        )
    except OSError as exc:
        log.warning("metrics not written: %s: %s", exc.filename or cfg.daemon.state_dir, exc.strerror)
    except Exception as exc:  # a bug here must not cost the daemon
        log.exception("metrics not written: %s", type(exc).__name__)
    if cfg.persist.enabled and facts.state is not None:
        from wgsyncd import persist

        try:
            written = persist.save(cfg.persist.directory, facts.state)
        except OSError as exc:
            log.error(
                "persist snapshot not written: %s: %s", exc.filename or cfg.persist.directory, exc.strerror
            )
            return
        except Exception as exc:  # a bug here must not cost the daemon
            log.exception("persist snapshot not written: %s", type(exc).__name__)
            return
        if written:
            log.info("persist snapshot updated for %s", ", ".join(written))
