"""Is the version restore picked the host's newest? The host's signed head says (migration 0009).

Why: signed versions chain backwards, so a database that withholds or deletes a host's
newest versions still shows a valid chain ending at an older one, and restoring "the
latest" would put back an old configuration (a revoked peer, an old key). Every
committed cycle the host signs its head: "at T my newest version is N with link L".

Restore reads the head *before* it picks a version (a host committing meanwhile can
then only make the chain newer than the head, never look like withholding), and:
- restoring the latest (or ``--at`` a time at or after the head's): refuses unless the
  database holds version N with link L and the picked version is not older than N;
  refuses too when there is no head a pinned key signed (a database that withholds can
  blank the head as well); ``--version`` is the way out, named in every refusal;
- ``--version``, or ``--at`` an earlier time: the same findings as warnings;
- always: says when the host last vouched, so the operator can compare that with when
  the host went down (a database can show an older genuine head, never make a newer one).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from wgsyncd.restore.errors import RestoreError

if TYPE_CHECKING:
    from wgsyncd.restore.trust import Pins
    from wgsyncd.signing import SignedHead


@dataclass(frozen=True)
class Asked:
    """How the operator chose the version: the latest, ``--at`` a time, or (neither) by number."""

    latest: bool
    at: datetime | None = None

    def bound_by(self, head: SignedHead) -> bool:
        """Whether the head must hold for this choice (else it only warns): the latest, or a
        time at or after the head's, when the host had already said which version was newest."""
        return self.latest or (self.at is not None and self.at >= head.at)


def _age(then: datetime, now: datetime) -> str:
    """How long before ``now``, roughly, for a person deciding whether that is recent enough.

    A time ahead of ``now`` is said so, not shown as "0 s ago": a host whose clock ran
    ahead signed it, and a replay of it would otherwise look fresh."""
    seconds = int((now - then).total_seconds())
    if seconds < -60:
        return f"{_age(now, then).removesuffix(' ago')} in the future: the host's clock was ahead"
    seconds = max(0, seconds)
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''} ago"
    return f"{seconds} s ago"


def head_check(
    head: SignedHead | None, host_id: str, version: int, rows: list[Any], pins: Pins, asked: Asked
) -> tuple[str | None, list[str]]:
    """(the vouched line, warnings) for restoring ``version``; RestoreError where the head binds.

    ``rows``: the host's chain as restore verified it (signing.Signed, oldest first).
    """
    label = f"host {host_id}"
    way_out = f"`--version {version}` restores it knowingly"

    def refuse_or_warn(problem: str, binding: bool) -> tuple[str | None, list[str]]:
        if binding:
            raise RestoreError(f"{label} version {version}: refused: {problem}; {way_out}")
        return None, [f"warning: {problem}"]

    unproven = (
        f"nothing shows that version {version} is the host's newest (a database that withholds newer ones"
    )
    if head is None:
        return refuse_or_warn(
            f"{label} has no signed head in the database (its agent writes one every cycle since "
            f"schema 9): {unproven} can drop the head too)",
            asked.latest,
        )
    if not any(head.signed_by(k) for k in pins.for_head(host_id)):
        return refuse_or_warn(
            f"{label}: its head in the database is not signed by a key pinned (and not retired) in "
            f"{pins.path} (forged, or an unpinned or retired key's): {unproven} can replace the head too)",
            asked.latest,
        )
    when = f"{head.at.astimezone(UTC).isoformat(timespec='seconds')} ({_age(head.at, datetime.now(UTC))})"
    row = next((r for r in rows if r.version == head.version), None)
    if row is None or row.link() != head.link:
        what = "does not hold it" if row is None else "holds another version under that number"
        return refuse_or_warn(
            f"{label} vouched at {when} that its newest config version is {head.version}; the database "
            f"{what}: newer versions were withheld, deleted or replaced",
            asked.bound_by(head),
        )
    if head.version > version and asked.bound_by(head):
        # the head was read first, so an honest database shows a chain at least that new
        raise RestoreError(
            f"{label} version {version}: refused: picked as the newest, but {label} vouched at {when} "
            f"that version {head.version} (which the database holds) is its newest: the database "
            f"answered restore's reads inconsistently; try again, or `--version {head.version}`"
        )
    if head.version < version:
        return (
            f"{label} vouched at {when} that version {head.version} was its newest; version {version} "
            "is newer (written since by an agent that signs no head, or the head was replayed)"
        ), []
    return f"{label} vouched at {when} that version {head.version} is its newest", []
