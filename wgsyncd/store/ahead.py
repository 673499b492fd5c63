"""A cycle's version content, built on a worker thread while the server writes its rows.

Why: at a first sync of 10,000 peers the server spends ~0.3 s inserting rows while
this process only waits, and building the version document (its hashes and its
canonical JSON, store/versions.py) is ~0.25 s of pure Python. The driver releases
the GIL while it waits, so the two overlap on two cores. Only for a complete read:
then the document is a function of the state and the recovery key alone (nothing
is carried forward from the stored latest version), so it can be built before the
transaction has read anything. The writer starts it only when the plan writes config
rows (then ``versions.record`` needs the content anyway), never on an idle cycle.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from wgsyncd.canonical import signed_joined
from wgsyncd.state import HostState
from wgsyncd.store.versions import Content, build_content

_POOL: ThreadPoolExecutor | None = None
_LOCK = threading.Lock()


def complete(state: HostState) -> bool:
    """Every source was read without an error: versions.record needs no stored document."""
    return bool(state.sources) and all(state.sources.values()) and not state.errors


def _pool() -> ThreadPoolExecutor:
    """One worker for the process, made on first use (a daemon reuses it every cycle)."""
    global _POOL
    with _LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wgsyncd-content")
        return _POOL


def _build(state: HostState, recovery_public: str | None) -> tuple[Content, bytes]:
    """The content and its canonical bytes (hashed for the signature and stored as the doc)."""
    content = build_content(state, recovery_public, None)
    return content, signed_joined(content.doc)


def start(state: HostState, recovery_public: str | None) -> Future[tuple[Content, bytes]] | None:
    """Begin building ``state``'s version content, or None when it cannot be built ahead."""
    if not complete(state):
        return None
    return _pool().submit(_build, state, recovery_public)
