"""What restore tells the operator: version history, the status warning, JSON and text output."""

from __future__ import annotations

import json
from typing import Any

from wgsyncd.restore.errors import RestoreError


def history(
    conn: Any, host_id: str, limit: int | None = None, trusted_keys: str | None = None
) -> list[dict[str, Any]]:
    """The host's versions, newest first, as plain dicts (for text and --json output).

    With ``trusted_keys`` each version also says whether restore would trust it
    (``trust``: "ok", "ok, with a warning: ..." when a retired key signed it within its
    bound, or the reason it would be refused; the document hash is checked only by
    restore itself).
    """
    from wgsyncd.signing import GENESIS, key_id
    from wgsyncd.store import versions

    if not versions.host_known(conn, host_id):
        raise RestoreError(f"host {host_id}: unknown host (it never synced to this database)")
    problems: dict[int, str | None] = {}
    if trusted_keys:
        from wgsyncd.restore import trust
        from wgsyncd.store import signed

        chain, pins = signed.load_chain(conn, host_id), trust.read_pins(trusted_keys)
        signers: dict[int, str] = {}
        found = trust.problems(chain, pins, signers)
        for v, problem in found.items():
            warned = None if problem else trust.retired_warning(host_id, signers.get(v), pins, f"version {v}")
            problems[v] = problem or (warned and f"ok, with a warning: {warned}")
    return [
        {
            "version": r.version,
            "created_at": r.created_at.isoformat(),
            "sync_id": str(r.sync_id),
            "interfaces": r.interfaces,
            "peers": r.peers,
            "sealed": r.sealed,
            "recovery_key_fp": r.recovery_key_fp,
            "signing_key_id": key_id(r.signing_key) if r.signing_key else None,
            "chain_start": r.prev_sha256 == GENESIS,
            **({"trust": problems.get(r.version) or "ok"} if trusted_keys else {}),
        }
        for r in versions.list_versions(conn, host_id, limit)
    ]


def unsealed_warning(conn: Any, host_id: str) -> str | None:
    """The `status` warning when the host's latest version has no sealed secrets, else None."""
    from wgsyncd.store import versions

    rows = versions.list_versions(conn, host_id, 1)
    if rows and not rows[0].sealed:
        return (
            f"warning: host {host_id}: latest config version {rows[0].version} has no sealed secrets: "
            "restore will be incomplete: no recovery_public_key configured"
        )
    return None


def as_json(changes: Any) -> Any:
    """Restore results as JSON-able data (dataclasses to dicts); holds no secrets."""
    from wgsyncd.render import plain

    return json.loads(json.dumps(plain(changes), default=str))


def restore_text(out: dict[str, Any]) -> str:
    """Text output of restore (:func:`~wgsyncd.restore.targets.outcome`): one line per
    file/interface/device; the diffs on a dry run."""
    dry_run = out["dry_run"]
    verb = "would restore" if dry_run else "restored"
    lines = [f"{verb} host {out['host_id']} version {out['version']} ({out['created_at']})\n"]
    if out.get("vouched"):
        lines.append(f"  {out['vouched']}\n")
    for name in out["without_secrets"]:
        lines.append(f"  warning: {name}: restored without keys (they were never stored)\n")
    for f in out.get("files", []):
        extra = f", backup {f.backup}" if f.backup else ""
        would = "would be " if dry_run and f.action != "unchanged" else ""
        lines.append(f"  {f.path}: {would}{f.action}{extra}\n")
        if dry_run and f.diff:
            lines.append(f.diff)
    for ch in [*out.get("interfaces", []), *out.get("wgrest", [])]:
        lines.append(f"  {ch.summary()}" + (" (dry run)" if dry_run else "") + "\n")
    return "".join(lines)
