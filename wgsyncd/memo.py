"""What one process remembers between cycles: one object, owned by the daemon (or one `sync` run).

Why one object instead of module globals: the daemon decides when the memory starts
and ends (a new host_id empties it), tests get a fresh one each, and the timer-mode
cache (wgsyncd/synccache.py) persists this object between two one-shot runs (all
but the signers, which hold the signing key; the prune times go in its view file).
Every source passes its part down explicitly; nothing here does I/O.

The never-edit rule: a memo hands the same Peer/Interface objects back next cycle
(an unchanged conf file, peer block or wgrest answer is not parsed again; an unchanged
merged peer is not merged again), so those objects are sealed (state.seal) the moment
a source or merge returns them: an edit raises instead of corrupting the next cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wgsyncd.merge import MergeMemo
from wgsyncd.state import Interface, Peer

if TYPE_CHECKING:
    from wgsyncd.signing import Signer


@dataclass(slots=True)
class Memo:
    """Between-cycle memory of one host's agent; each part is owned by the module named."""

    host_id: str | None = None
    # merge.py: (interface, public key) -> the last merge's inputs, peer and drift
    merge: MergeMemo = field(default_factory=MergeMemo)
    # sources/conffiles.py: conf path -> (sha256 of its bytes, its sealed parse)
    conf: dict[str, tuple[bytes, Interface]] = field(default_factory=dict)
    # sources/uapi.py: control socket path -> {16-byte digest of a peer block: its sealed Peer}
    uapi: dict[str, dict[bytes, Peer]] = field(default_factory=dict)
    # sources/wgrest.py: device -> {16-byte digest of a peer's JSON object: its sealed Peer}
    wgrest: dict[str, dict[bytes, Peer]] = field(default_factory=dict)
    # sources/wgrest.py: (state dir, URL) -> when that wgrest first answered
    wgrest_answered: dict[tuple[str | None, str], str] = field(default_factory=dict)
    # signing.py: (state dir, host_id) -> the signer (key and last signed record, read once)
    signers: dict[tuple[str, str], Signer] = field(default_factory=dict)
    # cycle.py: host_id -> wall time (epoch s) of its last history prune that left no
    # backlog (a host prunes hourly), and of its last whole-history fold (migration 0010:
    # daily, the hourly ones look back two hours only). Timer mode keeps these in its view
    # file (synccache.py), not in the memo file: they change hourly, the memo file is
    # tens of MiB that are rewritten only when a source changed.
    pruned: dict[str, float] = field(default_factory=dict)
    folded: dict[str, float] = field(default_factory=dict)
    # cycle.py: host_id -> where its whole-history fold goes on (epoch s) while one is under
    # way over several cycles (store/retention.py walks it oldest first)
    fold_from: dict[str, float] = field(default_factory=dict)

    def for_host(self, host_id: str) -> Memo:
        """This memo, emptied first if it belonged to another host_id (never carried across)."""
        if self.host_id != host_id:
            self.clear()
            self.host_id = host_id
        return self

    def clear(self) -> None:
        """Forget everything (a reload that changed the host, or a cache not to be trusted)."""
        self.host_id = None
        self.merge = MergeMemo()
        for part in (
            self.conf,
            self.uapi,
            self.wgrest,
            self.wgrest_answered,
            self.signers,
            self.pruned,
            self.folded,
            self.fold_from,
        ):
            part.clear()

    def prune_due(self, host_id: str, now: float, every: float) -> bool:
        """True when this host's history was not pruned in the ``every`` seconds before
        ``now`` (epoch s; see cycle._prune). A clock that went back makes it due."""
        last = self.pruned.get(host_id)
        return last is None or not 0 <= now - last < every
