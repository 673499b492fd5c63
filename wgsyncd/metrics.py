"""Prometheus metrics: a snapshot of the last cycle, rendered in the text exposition format.

Why a file and not an HTTP endpoint: hosts already run node_exporter, whose textfile
collector serves ``*.prom`` files from one directory; writing there adds no listening
socket to a root daemon. The daemon hands :func:`record` what a cycle did; the
snapshot (with the counters carried across cycles and restarts) is kept as
``metrics.json`` in the state dir, so ``wgsyncd metrics`` prints the same exposition
without touching the database. Rendering is pure (:func:`render`) so it is tested
without a daemon.

Per-peer series are capped (``metrics.max_peer_series``): a 10,000-peer host would
otherwise put 30,000 series into every scrape. Peers are kept in (interface, public
key) order, so the kept set is stable from cycle to cycle;
``wgsyncd_peer_series_dropped`` says how many were left out.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wgsyncd.atomicfile import write_atomic
from wgsyncd.canonical import sorted_text

STATE_FILE = "metrics.json"
DEFAULT_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
TEXTFILE_NAME = "wgsyncd.prom"
RESULTS = ("ok", "partial", "failed")
SOURCES = ("kernel", "conf", "wgrest")
NAME_LABEL_MAX = 128  # a peer name from a conf comment can be long; a label should not be


@dataclass
class PeerSample:
    """One peer's series: what the kernel counted, and the name an operator knows it by."""

    interface: str
    public_key: str
    name: str
    rx_bytes: int
    tx_bytes: int
    latest_handshake: float  # unix seconds; 0 = never


@dataclass
class Snapshot:
    """Everything one exposition shows: the last cycle, the running totals, per-interface/peer data."""

    time: float  # when the cycle ended, unix seconds
    result: str  # ok | partial | failed
    duration_seconds: float
    last_success_time: float  # unix seconds of the last ok/partial cycle; 0 = never
    rows_written: int
    drift: int
    db_round_trips: int
    source_errors: dict[str, int] = field(default_factory=dict)  # last cycle, by source
    cycles_total: dict[str, int] = field(default_factory=dict)  # by result
    rows_written_total: int = 0
    source_errors_total: dict[str, int] = field(default_factory=dict)
    db_round_trips_total: int = 0
    interface_peers: dict[str, int] = field(default_factory=dict)
    peers: list[PeerSample] = field(default_factory=list)
    peers_dropped: int = 0
    version: str = ""


@dataclass
class CycleFacts:
    """What the daemon knows about one finished cycle (the state may be missing if it failed early)."""

    result: str
    duration_seconds: float
    rows_written: int = 0
    drift: int = 0
    db_round_trips: int = 0
    source_errors: dict[str, int] = field(default_factory=dict)
    state: Any = None  # HostState of the cycle, or None when the cycle ended before one was read


def peer_samples(state: Any, cap: int) -> tuple[dict[str, int], list[PeerSample], int]:
    """Per-interface peer counts and at most ``cap`` peer samples (stable order), plus how many were dropped.

    Only peers the kernel reports have counters; conf-only peers are counted per
    interface but get no per-peer series.
    """
    counts: dict[str, int] = {}
    running = []
    for name in sorted(state.interfaces):
        iface = state.interfaces[name]
        counts[name] = len(iface.peers)
        for key in sorted(iface.peers):
            peer = iface.peers[key]
            if peer.rx_bytes is None and peer.tx_bytes is None and peer.latest_handshake is None:
                continue
            running.append((name, peer))
    kept = [
        PeerSample(
            interface=name,
            public_key=peer.public_key,
            name=(peer.name or "")[:NAME_LABEL_MAX],
            rx_bytes=peer.rx_bytes or 0,
            tx_bytes=peer.tx_bytes or 0,
            latest_handshake=peer.latest_handshake.timestamp() if peer.latest_handshake else 0.0,
        )
        for name, peer in running[: max(cap, 0)]
    ]
    return counts, kept, len(running) - len(kept)


def _add(totals: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """Counter maps added key by key."""
    out = dict(totals)
    for key, value in more.items():
        out[key] = out.get(key, 0) + value
    return out


def next_snapshot(
    previous: Snapshot | None, facts: CycleFacts, cap: int, now: float, version: str
) -> Snapshot:
    """The snapshot after one more cycle: last-cycle gauges from ``facts``, counters carried on.

    A cycle that read no state (the database was down before the read) keeps the
    previous per-interface and per-peer samples: the counters there did not go back.
    """
    prev = previous or Snapshot(0.0, "ok", 0.0, 0.0, 0, 0, 0)
    ok = facts.result in ("ok", "partial")
    if facts.state is not None:
        counts, peers, dropped = peer_samples(facts.state, cap)
    else:
        counts, peers, dropped = prev.interface_peers, prev.peers, prev.peers_dropped
    return Snapshot(
        time=now,
        result=facts.result,
        duration_seconds=facts.duration_seconds,
        last_success_time=now if ok else prev.last_success_time,
        rows_written=facts.rows_written,
        drift=facts.drift,
        db_round_trips=facts.db_round_trips,
        source_errors=dict(facts.source_errors),
        cycles_total=_add(prev.cycles_total, {facts.result: 1}),
        rows_written_total=prev.rows_written_total + facts.rows_written,
        source_errors_total=_add(prev.source_errors_total, facts.source_errors),
        db_round_trips_total=prev.db_round_trips_total + facts.db_round_trips,
        interface_peers=counts,
        peers=peers,
        peers_dropped=dropped,
        version=version,
    )


# -- the exposition format -------------------------------------------------------------


def escape_label(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """A sample value: integers without a decimal point, floats in full precision."""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 2**53):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _labels(labels: dict[str, str]) -> str:
    """``{a="x",b="y"}`` or nothing."""
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items()) + "}"


class _Family:
    """One metric family: HELP, TYPE, then its samples."""

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.kind, self.help = name, kind, help_text
        self.samples: list[tuple[dict[str, str], float]] = []

    def add(self, value: float, **labels: str) -> _Family:
        """One sample; returns self so single-sample families read as one expression."""
        self.samples.append((labels, value))
        return self

    def lines(self) -> Iterator[str]:
        """The family as exposition lines."""
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in self.samples:
            yield f"{self.name}{_labels(labels)} {_number(value)}"


def _families(s: Snapshot) -> Iterable[_Family]:
    """Every family of one snapshot, in a fixed order."""
    yield _Family("wgsyncd_info", "gauge", "wgsyncd agent version (always 1).").add(1, version=s.version)
    yield _Family("wgsyncd_cycle_duration_seconds", "gauge", "Wall time of the last cycle.").add(
        s.duration_seconds
    )
    last = _Family("wgsyncd_cycle_result", "gauge", "1 for the result of the last cycle, 0 for the others.")
    for result in RESULTS:
        last.add(1 if s.result == result else 0, result=result)
    yield last
    cycles = _Family("wgsyncd_cycles_total", "counter", "Cycles by result.")
    for result in RESULTS:
        cycles.add(s.cycles_total.get(result, 0), result=result)
    yield cycles
    yield _Family("wgsyncd_last_cycle_timestamp_seconds", "gauge", "When the last cycle ended.").add(s.time)
    yield _Family(
        "wgsyncd_last_success_timestamp_seconds",
        "gauge",
        "When the last ok or partial cycle ended (0 = never).",
    ).add(s.last_success_time)
    yield _Family(
        "wgsyncd_cycle_rows_written", "gauge", "Configuration rows the last cycle wrote to the database."
    ).add(s.rows_written)
    yield _Family("wgsyncd_rows_written_total", "counter", "Configuration rows written to the database.").add(
        s.rows_written_total
    )
    errors = _Family("wgsyncd_cycle_source_errors", "gauge", "Source errors in the last cycle, by source.")
    errors_total = _Family("wgsyncd_source_errors_total", "counter", "Source errors, by source.")
    for source in sorted(set(SOURCES) | set(s.source_errors) | set(s.source_errors_total)):
        errors.add(s.source_errors.get(source, 0), source=source)
        errors_total.add(s.source_errors_total.get(source, 0), source=source)
    yield errors
    yield errors_total
    yield _Family(
        "wgsyncd_drift_entries", "gauge", "Disagreements between kernel, conf files and wgrest."
    ).add(s.drift)
    yield _Family(
        "wgsyncd_cycle_db_round_trips", "gauge", "Database round trips of the last cycle's write."
    ).add(s.db_round_trips)
    yield _Family("wgsyncd_db_round_trips_total", "counter", "Database round trips of every write.").add(
        s.db_round_trips_total
    )
    peers = _Family("wgsyncd_interface_peers", "gauge", "Peers per interface (merged from every source).")
    for name, count in sorted(s.interface_peers.items()):
        peers.add(count, interface=name)
    yield peers
    rx = _Family(
        "wgsyncd_peer_receive_bytes_total", "counter", "Bytes received from the peer (kernel counter)."
    )
    tx = _Family("wgsyncd_peer_transmit_bytes_total", "counter", "Bytes sent to the peer (kernel counter).")
    hs = _Family(
        "wgsyncd_peer_latest_handshake_timestamp_seconds",
        "gauge",
        "Time of the peer's latest handshake (0 = never).",
    )
    for p in s.peers:
        labels = {"interface": p.interface, "public_key": p.public_key, "name": p.name}
        rx.add(p.rx_bytes, **labels)
        tx.add(p.tx_bytes, **labels)
        hs.add(p.latest_handshake, **labels)
    yield from (rx, tx, hs)
    yield _Family(
        "wgsyncd_peer_series_dropped",
        "gauge",
        "Peers left without per-peer series by metrics.max_peer_series.",
    ).add(s.peers_dropped)


def render(snapshot: Snapshot) -> str:
    """The whole exposition text (Prometheus text format 0.0.4), newline-terminated."""
    return "\n".join(line for fam in _families(snapshot) for line in fam.lines()) + "\n"


# -- files -------------------------------------------------------------------------------


def _atomic_write(path: Path, text: str, mode: int) -> None:
    """Temp file in the same directory, chmod, rename: a reader sees the old file or the new one.

    The temp name starts with a dot and does not end in .prom, so node_exporter's
    textfile collector never reads a half-written file.
    """
    write_atomic(path, text, mode)


def textfile_path(setting: str | None, default_dir: str = DEFAULT_TEXTFILE_DIR) -> Path | None:
    """Where to write the .prom file: the configured path, the node_exporter default when its
    directory exists (``auto``), or None (disabled, or auto without node_exporter)."""
    if not setting:
        return None
    if setting == "auto":
        return Path(default_dir) / TEXTFILE_NAME if Path(default_dir).is_dir() else None
    return Path(setting)


def snapshot_to_json(snapshot: Snapshot) -> str:
    """The state file's text."""
    return sorted_text(asdict(snapshot))


def snapshot_from_json(text: str) -> Snapshot:
    """Parse the state file; ValueError/KeyError/TypeError when it is damaged."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    data["peers"] = [PeerSample(**p) for p in data.get("peers", [])]
    return Snapshot(**data)


def load(state_dir: str) -> Snapshot:
    """The last snapshot from the state dir; OSError when there is none, ValueError when damaged."""
    try:
        return snapshot_from_json((Path(state_dir) / STATE_FILE).read_text())
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{Path(state_dir) / STATE_FILE}: damaged: {exc}") from None


def record(
    state_dir: str,
    textfile: str | None,
    facts: CycleFacts,
    *,
    cap: int,
    version: str,
    now: float | None = None,
) -> Snapshot:
    """One cycle's metrics: update the snapshot in the state dir, then the textfile (if any).

    Both writes are atomic; the textfile is 0644 so node_exporter (its own user) can
    read it. A missing or damaged previous snapshot restarts the counters at zero,
    which Prometheus reads as a counter reset.
    """
    try:
        previous: Snapshot | None = load(state_dir)
    except (OSError, ValueError):
        previous = None
    snap = next_snapshot(previous, facts, cap, time.time() if now is None else now, version)
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _atomic_write(directory / STATE_FILE, snapshot_to_json(snap), 0o600)
    target = textfile_path(textfile)
    if target is not None:
        _atomic_write(target, render(snap), 0o644)
    return snap
