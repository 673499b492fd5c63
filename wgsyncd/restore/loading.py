"""Loading a version: pick it, check the recovery key, open and verify its secrets, rebuild the model.

Nothing here writes anything. The recovery key is compared by public key
fingerprint BEFORE any blob is opened, every blob must hash to what the version
recorded, and the result is a :class:`Loaded` whose keys stay in
:class:`~wgsyncd.state.Secret`. The database (psycopg) and sealing (PyNaCl) parts
are imported where they are used, so the rest of restore works from a Loaded alone
(e.g. inside the kernel test VM).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from wgsyncd import validate
from wgsyncd.restore import trust
from wgsyncd.restore.errors import RestoreError
from wgsyncd.state import Interface, Peer, Secret, StateError, key_fingerprint

if TYPE_CHECKING:
    from wgsyncd.store import versions


@dataclass
class Loaded:
    """One version, opened: the desired interfaces with their secrets (as Secret)."""

    host_id: str
    version: int
    created_at: datetime
    interfaces: dict[str, Interface]
    without_secrets: list[str] = field(default_factory=list)  # restored with --allow-missing-secrets
    warnings: list[str] = field(default_factory=list)  # e.g. an unsigned version restored on request
    vouched: str | None = None  # the host's signed head, checked against this version (restore/freshness.py)

    @property
    def label(self) -> str:
        """``host H version N`` for messages."""
        return f"host {self.host_id} version {self.version}"


def parse_time(text: str) -> datetime:
    """An ISO 8601 time for ``--at``; without a zone it is UTC (the database stores UTC)."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise RestoreError(f"--at {text!r}: not an ISO 8601 time (e.g. 2025-11-25T08:00:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _pick_version(conn: Any, host_id: str, version: int | None, at: datetime | None) -> versions.Version:
    """The requested version, or a one-line refusal saying what exists instead."""
    from wgsyncd.store import versions

    if not versions.host_known(conn, host_id):
        raise RestoreError(f"host {host_id}: unknown host (it never synced to this database)")
    found = versions.load_version(conn, host_id, version=version, at=at)
    if found is not None:
        return found
    latest = versions.load_version(conn, host_id)
    if latest is None:
        raise RestoreError(f"host {host_id}: no config versions recorded yet (run `wgsyncd sync` there)")
    if version is not None:
        raise RestoreError(f"host {host_id}: no version {version} (versions 1..{latest.version})")
    first = versions.first_version_time(conn, host_id)
    raise RestoreError(
        f"host {host_id}: no version at or before {at.isoformat() if at else '?'} "
        f"(the first version is from {first.isoformat() if first else '?'})"
    )


def _select(ver: versions.Version, interfaces: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The version's interface documents, limited to ``interfaces`` when given."""
    docs: dict[str, dict[str, Any]] = ver.doc.get("interfaces", {})
    wanted = list(dict.fromkeys(interfaces))
    if not wanted:
        return docs
    unknown = [n for n in wanted if n not in docs]
    if unknown:
        have = ", ".join(sorted(docs)) or "none"
        raise RestoreError(
            f"host {ver.host_id} version {ver.version}: no interface {', '.join(unknown)} (it has: {have})"
        )
    return {n: docs[n] for n in wanted}


CREDENTIAL = "recovery-key"  # systemd credential name: LoadCredential=recovery-key:... / --load-credential


def _recovery_key(path: str | None, label: str) -> Secret:
    """The operator's recovery private key: a file, ``-`` (stdin) or the systemd credential.

    Why not only a file: the key never needs to sit on the host being restored. It can
    be piped in (`--recovery-key -`) or handed over as a systemd credential
    ($CREDENTIALS_DIRECTORY/recovery-key, e.g. `systemd-run -p LoadCredential=...`),
    which lives in memory for the run only. Without any of these, restore is impossible.
    """
    import os
    import sys

    from wgsyncd import secrets as sealing

    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if not path and cred_dir and os.path.exists(os.path.join(cred_dir, CREDENTIAL)):
        path = os.path.join(cred_dir, CREDENTIAL)
    if not path:
        raise RestoreError(
            f"{label}: secrets are sealed; restoring them is impossible without the recovery private key "
            "(--recovery-key FILE or -, made by `wgsyncd keys init-recovery`)"
        )
    try:
        if path == "-":
            return sealing.parse_recovery_private(sys.stdin.read(), "stdin")
        return sealing.load_recovery_private(path)
    except (sealing.SealError, StateError) as exc:
        raise RestoreError(f"{label}: {exc}") from None


def _open_secrets(
    conn: Any,
    ver: versions.Version,
    docs: dict[str, dict[str, Any]],
    key_file: str | None,
    allow_missing: bool,
    verified: trust.Verified,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Check the key, then open and verify every selected interface's sealed secrets.

    Each blob must be the one the host signed (its sha256) before it is opened, and
    its content must hash to what the version recorded after.
    """
    from wgsyncd import secrets as sealing
    from wgsyncd.store import versions

    label = f"host {ver.host_id} version {ver.version}"
    unsealed = {n: d["secrets"] for n, d in docs.items() if not (d.get("secrets") or {}).get("sealed_to")}
    missing = sorted(unsealed)
    if missing and not allow_missing:
        raise RestoreError(
            f"{label}: interface {', '.join(missing)}: secrets were not stored (no recovery_public_key was "
            "configured); restoring its keys is impossible. --allow-missing-secrets restores the rest"
        )
    refs = {
        n: (d["secrets"]["sha256"], d["secrets"]["sealed_to"]) for n, d in docs.items() if n not in unsealed
    }
    if not refs:
        return {}, missing
    private = _recovery_key(key_file, label)
    have_fp = key_fingerprint(sealing.recovery_public_of(private))
    for name, (_sha, fp) in sorted(refs.items()):
        if fp != have_fp:
            raise RestoreError(
                f"{label}: interface {name}: {key_file} is not the recovery key its secrets were sealed to "
                f"(key {have_fp[:12]}, sealed to {fp[:12]}); nothing was changed"
            )
    blobs = versions.load_sealed(conn, ver.host_id, refs)
    out: dict[str, dict[str, Any]] = {}
    for name, (sha, _fp) in sorted(refs.items()):
        if name not in blobs:
            raise RestoreError(f"{label}: interface {name}: sealed secrets are missing from config_secrets")
        what = f"{label}: interface {name}"
        wrong = trust.blob_ok(verified, name, blobs[name])
        if wrong is not None:
            raise RestoreError(f"{what}: {wrong}")
        try:
            clear = sealing.unseal_json(private, blobs[name], what)
        except sealing.SealError as exc:
            raise RestoreError(str(exc)) from None
        except ValueError:
            raise RestoreError(f"{what}: sealed secrets are not valid JSON: tampered data") from None
        if versions.secrets_sha256(clear) != sha:
            raise RestoreError(f"{what}: sealed secrets do not match the version's hash: tampered data")
        out[name] = clear
    return out, missing


def load(
    conn: Any,
    host_id: str,
    *,
    version: int | None = None,
    at: datetime | None = None,
    interfaces: Iterable[str] = (),
    recovery_key_file: str | None = None,
    allow_missing_secrets: bool = False,
    trusted_keys: str | None = None,
    allow_unsigned: bool = False,
) -> Loaded:
    """Find a version, verify its signature and chain, check the recovery key, open its secrets.

    Changes nothing. Raises RestoreError (one line) on an unknown host/version/
    interface, a version not signed in chain by a key pinned in ``trusted_keys``
    (restore/trust.py; unsigned ones pass only with ``allow_unsigned``), a missing or
    wrong recovery key, a missing or tampered blob, or secrets that were never stored
    (unless ``allow_missing_secrets``: then those interfaces come without keys).
    """
    if version is not None and at is not None:
        raise RestoreError("--version and --at: give one of them")
    from wgsyncd.store import signed

    head = signed.load_head(conn, host_id)  # before the pick: see restore/freshness.py
    ver = _pick_version(conn, host_id, version, at)
    verified = trust.check(
        conn,
        ver,
        trusted_keys,
        allow_unsigned=allow_unsigned,
        picked=version is None,
        at=at,
        head=head,
    )
    docs = _select(ver, interfaces)
    clear, missing = _open_secrets(conn, ver, docs, recovery_key_file, allow_missing_secrets, verified)
    label = f"host {ver.host_id} version {ver.version}"
    built = {
        n: desired_interface(d, clear.get(n), f"{label}: interface {validate.shown(str(n))}")
        for n, d in docs.items()
    }
    return Loaded(
        ver.host_id, ver.version, ver.created_at, built, missing, verified.warnings, verified.vouched
    )


def _tuple(value: list[str] | None) -> tuple[str, ...] | None:
    """JSON lists back to the model's tuples."""
    return None if value is None else tuple(value)


def _conf_endpoints(text: str, where: str) -> dict[str, str | None]:
    """Each conf peer's configured Endpoint (None = none), from the raw conf text."""
    from wgsyncd.wire import conftext
    from wgsyncd.wire.conflines import QUIET

    quiet = QUIET.set(True)  # the host warned when it read the file; `path` is database text
    try:
        parsed = conftext.parse_conf(text, "conf_text")
    except conftext.ConfParseError as exc:
        line = f"line {exc.lineno} {exc.field_name}" if exc.lineno is not None else "the file"
        raise RestoreError(f"{where}: stored conf text does not parse: {line}: {exc.message}") from None
    finally:
        QUIET.reset(quiet)
    return {k: p.endpoint for k, p in parsed.peers.items()}


def desired_interface(doc: dict[str, Any], clear: dict[str, Any] | None, where: str) -> Interface:
    """Rebuild the model from a version's interface document and its opened secrets.

    Endpoint: the conf's Endpoint for peers in the conf (a roamed, kernel-learned
    endpoint is not configuration); otherwise the endpoint recorded in the version.
    """
    clear = clear or {}
    psks: dict[str, str] = clear.get("preshared_keys") or {}
    privs: dict[str, str] = clear.get("peer_private_keys") or {}
    conf_text = clear.get("conf_text")
    name = doc["name"]
    conf_eps = _conf_endpoints(conf_text, where) if conf_text is not None else {}
    iface = Interface(
        name=name,
        private_key=Secret(clear["private_key"]) if clear.get("private_key") else None,
        public_key=doc.get("public_key"),
        listen_port=doc.get("listen_port"),
        fwmark=doc.get("fwmark"),
        addresses=_tuple(doc.get("addresses")),
        dns=_tuple(doc.get("dns")),
        mtu=doc.get("mtu"),
        table=doc.get("table"),
        pre_up=_tuple(doc.get("pre_up")),
        post_up=_tuple(doc.get("post_up")),
        pre_down=_tuple(doc.get("pre_down")),
        post_down=_tuple(doc.get("post_down")),
        save_config=doc.get("save_config"),
        conf_path=doc.get("conf_path"),
        conf_text=Secret(conf_text) if conf_text is not None else None,
        comments=_tuple(doc.get("comments")),
        implementation=doc.get("implementation"),
    )
    for p in doc.get("peers", []):
        pub = p["public_key"]
        iface.peers[pub] = Peer(
            public_key=pub,
            preshared_key=Secret(psks[pub]) if pub in psks else None,
            allowed_ips=_tuple(p.get("allowed_ips")),
            endpoint=conf_eps[pub] if pub in conf_eps else p.get("endpoint"),
            persistent_keepalive=p.get("persistent_keepalive"),
            name=p.get("name"),
            comments=_tuple(p.get("comments")),
            disabled=p.get("disabled"),
            private_key=Secret(privs[pub]) if pub in privs else None,
        )
    return iface


def running_peers(iface: Interface) -> dict[str, Peer]:
    """The peers that should run: every peer except those disabled in the conf (``#!``)."""
    return {k: p for k, p in iface.peers.items() if not p.disabled}
