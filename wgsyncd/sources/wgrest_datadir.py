"""wgrest v1's data directory: the peers' private keys and the per-device client defaults.

wgrest v1 keeps each peer's own private key in ``<data_dir>/v1/<url-safe-public-key>.conf``
(``Key = value`` lines) and each device's client defaults in ``<data_dir>/v1/<device>.conf``.
The wgrest source attaches the keys to the peers it read over HTTP; restore and the CLI
read the defaults. Files are opened without following symlinks (we run as root), and
a key file's name is a key, so errors show only its first characters.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from wgsyncd.state import Interface, Secret, Source, StateError, parse_key, shared
from wgsyncd.wire.wgrest_api import url_safe_to_std
from wgsyncd.wire.wgrest_http import WgrestProblem


@dataclass(frozen=True)
class DeviceDefaults:
    """wgrest v1's client-config defaults for one device (``<data_dir>/v1/<device>.conf``).

    Not part of the host state (they describe configs handed to clients, not the
    server), but a restore of a v1 host needs them to give clients the same configs.
    """

    device: str
    dns: tuple[str, ...]
    allowed_ips: tuple[str, ...]
    host: str | None


def _read_small_file(path: Path) -> str:
    """A data-dir file's text; never follows a symlink (we run as root)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "r", encoding="utf-8", errors="strict") as fh:
        return fh.read(65536)


def _key_values(text: str) -> dict[str, str]:
    """``Key = value`` lines (wgrest's own format), keys lower-cased; blank/# lines skipped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError("a line without '='")
        out[key.strip().lower()] = value.strip()
    return out


def _peer_key_files(v1_dir: Path) -> dict[str, Path]:
    """Standard base64 public key -> its private-key file in ``<data_dir>/v1/``."""
    files: dict[str, Path] = {}
    for entry in os.scandir(v1_dir):
        if entry.name.endswith(".conf"):
            public = url_safe_to_std(entry.name[: -len(".conf")])
            if public:
                files[public] = Path(entry.path)
    return files


def _shown_path(path: Path) -> str:
    """A key file's path for errors: the name is a key, so only its first 8 chars show."""
    return str(path.with_name(path.name[:8] + "...conf"))


def attach_private_keys(
    data_dir: Path, interfaces: dict[str, Interface]
) -> list[tuple[WgrestProblem, str | None]]:
    """Fill Peer.private_key from wgrest v1's ``<url-safe-pubkey>.conf`` files; returns the problems.

    wgrest never deletes those files, so a file whose peer is gone is ignored; a
    bad file for a live peer is one problem for that peer's interface (the
    interface stays: only the private key is unknown this cycle).
    """
    problems: list[tuple[WgrestProblem, str | None]] = []
    v1_dir = data_dir / "v1"
    if not v1_dir.is_dir():
        return problems
    try:
        files = _peer_key_files(v1_dir)
    except OSError as exc:
        return [(WgrestProblem(str(v1_dir), f"cannot list: {exc.strerror}"), None)]
    for iface in interfaces.values():
        for pub, peer in list(iface.peers.items()):
            path = files.get(pub)
            if path is None:
                continue
            try:
                key = _read_peer_private_key(path)
                # a new Peer, not an edit: the parsed one may be shared with the next cycle
                provenance = shared({**peer.provenance, "private_key": Source.WGREST})
                iface.peers[pub] = dataclasses.replace(peer, private_key=key, provenance=provenance)
            except WgrestProblem as exc:
                problems.append((exc, iface.name))
    return problems


def _read_peer_private_key(path: Path) -> Secret:
    """The ``PrivateKey =`` of one peer key file, checked, as a Secret."""
    where = _shown_path(path)
    try:
        values = _key_values(_read_small_file(path))
    except OSError as exc:
        raise WgrestProblem(where, f"cannot read: {exc.strerror}") from None
    except (UnicodeDecodeError, ValueError):
        raise WgrestProblem(where, "not a wgrest key file (Key = value lines)") from None
    text = values.get("privatekey")
    if not text:
        raise WgrestProblem(f"{where} PrivateKey", "missing")
    try:
        return Secret(parse_key(text, where=f"{where} PrivateKey"))
    except StateError as exc:
        raise WgrestProblem(f"{where} PrivateKey", str(exc).removeprefix(f"{where} PrivateKey: ")) from None


def read_device_defaults(data_dir: str | Path) -> dict[str, DeviceDefaults]:
    """wgrest v1's per-device client defaults (DNS, AllowedIPs, Host), by device name.

    Kept out of :func:`read`'s state on purpose (they are not server state); restore
    and the CLI can call this. Unreadable or malformed files raise WgrestProblem.
    """
    v1_dir = Path(data_dir) / "v1"
    out: dict[str, DeviceDefaults] = {}
    if not v1_dir.is_dir():
        return out
    for path in sorted(v1_dir.glob("*.conf")):
        stem = path.name[: -len(".conf")]
        if url_safe_to_std(stem):
            continue
        try:
            values = _key_values(_read_small_file(path))
        except OSError as exc:
            raise WgrestProblem(str(path), f"cannot read: {exc.strerror}") from None
        except (UnicodeDecodeError, ValueError):
            raise WgrestProblem(str(path), "not a wgrest options file (Key = value lines)") from None
        out[stem] = DeviceDefaults(
            device=stem,
            dns=_split_list(values.get("dns", "")),
            allowed_ips=_split_list(values.get("allowedips", "")),
            host=values.get("host") or None,
        )
    return out


def _split_list(text: str) -> tuple[str, ...]:
    """``a, b`` -> (a, b); wgrest writes lists comma-joined."""
    return tuple(v.strip() for v in text.split(",") if v.strip())
