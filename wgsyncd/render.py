"""Turn state, drift and status into JSON-able dicts and short text, for the CLI.

Secrets are shown as a fingerprint only: output of `wgsyncd collect --json` can be
pasted into a ticket without leaking a key.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime
from typing import Any

from wgsyncd.state import Drift, HostState, Interface, Peer, Secret


def plain(value: Any) -> Any:
    """A JSON-able copy of ``value``; secrets become {"fingerprint": ...}."""
    if isinstance(value, Secret):
        return {"secret": True, "fingerprint": value.fingerprint()} if value else None
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(plain(k)): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        return [plain(v) for v in value]
    return value


def peer_dict(peer: Peer) -> dict[str, Any]:
    """One peer for JSON output."""
    return plain(peer)


def interface_dict(iface: Interface) -> dict[str, Any]:
    """One interface for JSON output, peers as a list in order."""
    out = plain(dataclasses.replace(iface, peers={}))
    out["peers"] = [peer_dict(p) for p in iface.peers.values()]
    return out


def state_dict(state: HostState) -> dict[str, Any]:
    """The whole collected state for `wgsyncd collect --json`."""
    return {
        "host_id": state.host_id,
        "hostname": state.hostname,
        "collected_at": state.collected_at.isoformat(),
        "partial": state.partial,
        "sources": {str(k): v for k, v in state.sources.items()},
        "errors": [str(e) for e in state.errors],
        "interfaces": [interface_dict(i) for i in state.interfaces.values()],
        "drift": [drift_dict(d) for d in state.drift],
    }


def drift_dict(d: Drift) -> dict[str, Any]:
    """One drift entry for JSON output."""
    return {
        "interface": d.interface,
        "peer": d.peer,
        "field": d.field,
        "kind": str(d.kind),
        "values": dict(d.values),
    }


def state_text(state: HostState) -> str:
    """A short human summary: one line per interface, then errors and drift count."""
    lines = [f"host {state.hostname} ({state.host_id})"]
    for iface in state.interfaces.values():
        srcs = ",".join(str(s) for s in iface.seen_by)
        port = iface.listen_port if iface.listen_port is not None else "-"
        lines.append(f"  {iface.name}: {len(iface.peers)} peers, port {port}, from {srcs}")
    lines.extend(f"  error: {e}" for e in state.errors)
    lines.append(f"  drift: {len(state.drift)} (see `wgsyncd drift`)")
    return "\n".join(lines)


def table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    """Rows as an aligned text table (header, then one line per row) for a terminal.

    Numbers are right-aligned, text left-aligned; a column no row has is left out.
    Piped output keeps the key=value lines scripts already parse.
    """
    cols = [c for c in columns if any(c in r for r in rows)]
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(cols)]
    numeric = [
        all(isinstance(r.get(c), int | float) and not isinstance(r.get(c), bool) for r in rows) for c in cols
    ]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line([c.upper() for c in cols]), *(line(row) for row in cells)])


CELL_MAX = 80
CUT_MARK = "\u2026"


def _cell(value: Any) -> str:
    """One table cell: ISO times shortened to seconds, None as '-', at most CELL_MAX characters.

    Every row is padded to the widest cell, so one huge value (a host may store any name)
    would multiply into the whole output: it is cut, and the cut is marked."""
    if value is None:
        return "-"
    if isinstance(value, str) and len(value) > 19 and value[10:11] == "T":
        return value[:19].replace("T", " ")
    text = str(value)
    return text if len(text) <= CELL_MAX else text[: CELL_MAX - 1] + CUT_MARK
