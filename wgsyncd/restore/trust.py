"""What restore trusts: the host keys the operator pinned, and the chain they signed.

Why: everything in the database can be written by whoever owns it, including the
``signing_key`` column beside a signature and the database pins of
``host_signing_keys``. The only trust anchor is a file the operator keeps with the
recovery key (``--trusted-keys FILE``), one pin per line::

    # host_id  verify_key (base64 Ed25519)  [retired-after=N]  [comment]
    vpn-1  q2c1...=  pinned 2026-11-27 from `wgsyncd keys show-signing`

Several lines for one host are several valid keys (a reinstalled host makes a new
key; old versions stay restorable while the old key stays pinned). A key that may
have leaked is *retired* rather than unpinned (``wgsyncd keys retire``)::

    vpn-1  q2c1...=  retired-after=41  pinned 2026-11-27; retired: the old disk was lost

It still vouches for the versions it signed up to 41 (they stay restorable), but a
version numbered above 41 that it signed is refused, and a head it signed counts for
nothing: whoever holds the leaked key cannot make restore's "latest" theirs. A version is
restored only when (:func:`check`): it is signed by a pinned key of its host over its
own number, time, hashes and chain link; its document hashes to the signed value;
and following ``prev`` links leads, through versions that are all validly signed by
pinned keys, to a chain start. Unsigned versions (written before signing existed) are
refused unless the operator says ``--allow-unsigned``, and even then only when no
signed version precedes them (an agent that signs never writes an unsigned version).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wgsyncd.restore import freshness
from wgsyncd.restore.errors import RestoreError
from wgsyncd.restore.pins import (  # noqa: F401 (re-exported: callers write trust.read_pins)
    TRUST_HEADER,
    Pins,
    add_pin,
    pin,
    pinned_key,
    read_pins,
    retire_pin,
)

if TYPE_CHECKING:
    from datetime import datetime

    from wgsyncd.signing import SignedHead

UNSIGNED = "unsigned (written before versions were signed, or not by the host's agent)"
# ---------------------------------------------------------------- checking one version


def _pinned_signer(row: Any, pins: tuple[str, ...]) -> str | None:
    """The pinned key whose signature ``row`` carries, or None."""
    return next((k for k in pins if row.signed_by(k)), None)


def _retired_problem(row: Any, signer: str, pins: Pins, successor: int | None) -> str | None:
    """Why a version ``signer`` signed is refused because the operator retired that key, or None.

    Its bound N is the operator's word; a version its successor (a key pinned and not
    retired) signed with a lower number is the host's: the old key stopped signing when
    the new one started, whatever N says (N set too high, or the new chain numbered from
    1 because the database owner deleted the host's versions before the reinstall).
    """
    from wgsyncd.signing import key_id

    bound = pins.retired_after(row.host_id, signer)
    if bound is None:
        return None
    if row.version > bound:
        return (
            f"signed by key {key_id(signer)}, which {pins.path} retires after version {bound}: "
            "a retired key (it may have leaked) vouches for nothing newer"
        )
    if successor is not None and successor < row.version:
        return (
            f"signed by key {key_id(signer)}, which {pins.path} retires, but a key pinned (and not "
            f"retired) for host {row.host_id} already signed version {successor}: a retired key "
            "(it may have leaked) vouches for nothing after its successor started"
        )
    return None


def problems(rows: list[Any], pins: Pins, signers: dict[int, str] | None = None) -> dict[int, str | None]:
    """version -> why it cannot be trusted (signature, pin, chain), or None; one pass, oldest first.

    A version is in chain when its ``prev`` is GENESIS or the link of an earlier
    version that is itself trusted; each signature is checked once. ``signers``, if
    given, gets version -> the pinned key whose signature verified (for retired_warning).
    """
    from wgsyncd.signing import GENESIS, key_id

    out: dict[int, str | None] = {}
    trusted_links: dict[str, list[int]] = {}
    successor: dict[str, int] = {}  # host_id -> first version a pinned, not retired key signed
    for row in rows:
        keys = pins.of(row.host_id)
        signer = _pinned_signer(row, keys) if row.signature else None
        if signer is not None and signers is not None:
            signers[row.version] = signer
        if signer is not None and pins.retired_after(row.host_id, signer) is None:
            successor.setdefault(row.host_id, row.version)
        problem: str | None = None
        if not row.signature:
            problem = UNSIGNED
        elif not keys:
            problem = f"no key is pinned for host {row.host_id} in {pins.path}"
        elif signer is None:
            problem = (
                f"signed by key {key_id(row.signing_key)}, which is not pinned for host {row.host_id} "
                f"in {pins.path}"
                if row.signing_key not in keys
                else "signature does not verify: the version was altered or replayed "
                "(its number, time, hashes or chain link differ from what the host signed)"
            )
        elif (retired := _retired_problem(row, signer, pins, successor.get(row.host_id))) is not None:
            problem = retired
        elif row.prev != GENESIS and not any(v < row.version for v in trusted_links.get(row.prev or "", [])):
            problem = (
                f"off the chain: its previous version (link {str(row.prev)[:12]}) is missing, "
                "altered or not signed by a pinned key"
            )
        out[row.version] = problem
        if problem is None:
            trusted_links.setdefault(row.link(), []).append(row.version)
    return out


def retired_warning(host_id: str, key: str | None, pins: Pins, label: str) -> str | None:
    """What restore warns of a version it trusts that ``key``, a retired key, signed (its
    number is within the key's bound), or None. ``history`` shows the same words in its
    trust column."""
    from wgsyncd.signing import key_id

    bound = pins.retired_after(host_id, key) if key is not None else None
    if key is None or bound is None:
        return None
    return (
        f"{label} is signed by key {key_id(key)}, which {pins.path} retires after version {bound}: "
        "if that key leaked before this version was written, this version may be the thief's"
    )


@dataclass
class Verified:
    """A version restore may use: the blob hashes it signed, and warnings for the operator."""

    sealed: dict[str, str] | None  # interface -> sha256 of its sealed blob; None = unsigned version
    warnings: list[str]
    vouched: str | None = None  # what the host's signed head says, when a pinned key signed it


def check(
    conn: Any,
    ver: Any,
    pins_path: str | None,
    *,
    allow_unsigned: bool = False,
    picked: bool = False,
    at: datetime | None = None,
    head: SignedHead | None = None,
) -> Verified:
    """Refuse ``ver`` (one line naming the version and why) unless a pinned key signed it in chain.

    ``picked``: the version was chosen as the latest or by ``--at``, not by number; a
    refusal then names the newest version that would pass, if any. Picked as the latest
    (no ``at``) or by ``at``: checked against ``head``, the host's signed head as read
    before the version was picked (restore/freshness.py).
    """
    from wgsyncd.signing import doc_sha256, key_id
    from wgsyncd.store import signed

    label = f"host {ver.host_id} version {ver.version}"
    rows = signed.load_chain(conn, ver.host_id)
    row = next((r for r in rows if r.version == ver.version), None)
    if row is None or row.created_at != ver.created_at:
        raise RestoreError(f"{label}: changed while restore read it; try again")
    unsigned = "; --allow-unsigned restores it anyway" if not row.signature else ""
    if unsigned and any(r.signature for r in rows if r.version < row.version):
        # the host signed before this version: an agent that signs never writes unsigned again
        unsigned = "; it follows signed versions, so it is not from before signing (even --allow-unsigned)"
    elif unsigned and allow_unsigned:
        warning = f"WARNING: {label} is UNSIGNED: nothing proves its host wrote it (--allow-unsigned)"
        return Verified(None, [warning])
    if not pins_path:
        if unsigned:
            raise RestoreError(f"{label}: refused: {UNSIGNED}{unsigned}")
        raise RestoreError(
            f"{label}: restore needs the host keys you pinned: --trusted-keys FILE (see `wgsyncd keys trust`)"
        )
    pins = read_pins(pins_path)
    signers: dict[int, str] = {}
    found = problems([r for r in rows if r.version <= row.version], pins, signers)
    problem = found[row.version]
    if problem is None and doc_sha256(ver.doc) != row.doc_sha256:
        problem = "its document does not match the signed hash: tampered"
    if problem is not None:
        good = [v for v, p in found.items() if p is None and v < row.version]
        hint = (
            f" (the newest version that verifies is {max(good)}: --version {max(good)})"
            if picked and good
            else ""
        )
        raise RestoreError(f"{label}: refused: {problem}{unsigned}{hint}")
    key = signers.get(row.version)
    warnings = []
    if (retired := retired_warning(row.host_id, key, pins, label)) is not None:
        warnings.append(f"warning: {retired}")
    db_pins = signed.pinned_keys(conn, ver.host_id)
    if db_pins and key not in db_pins:
        warnings.append(
            f"warning: host {ver.host_id}: the database's pins do not list key {key_id(key)}, which "
            f"{pins.path} trusts and which signed this version; the database pin was changed or never updated"
        )
    asked = freshness.Asked(latest=picked and at is None, at=at)
    vouched, stale = freshness.head_check(head, row.host_id, row.version, rows, pins, asked)
    return Verified(dict(row.sealed or {}), [*stale, *warnings], vouched)


def blob_ok(verified: Verified, name: str, blob: bytes) -> str | None:
    """Why the sealed blob of interface ``name`` is not the one signed, or None."""
    if verified.sealed is None:
        return None
    want = verified.sealed.get(name)
    if want is None:
        return "its sealed secrets are not covered by the signature"
    if hashlib.sha256(blob).hexdigest() != want:
        return "sealed secrets are not the blob the host signed: tampered"
    return None
