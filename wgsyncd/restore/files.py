"""Target: a directory of conf files (``restore --to-dir``).

Conf files byte for byte from the sealed raw text (rendered in wg-quick format
when there is none), each written to a temp file, fsynced and renamed over the
old one, mode 0600, the old one kept as a backup (hard link).
"""

from __future__ import annotations

import difflib
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from wgsyncd import validate
from wgsyncd.restore.errors import RestoreError
from wgsyncd.restore.loading import Loaded
from wgsyncd.restore.render import redact_conf_line, render_conf
from wgsyncd.restore.values import check_loaded
from wgsyncd.state import CONF_NAME_RE, Interface

DEFAULT_DIR = "/etc/wireguard"


@dataclass
class FileChange:
    """One conf file restore wrote (or would write)."""

    path: str
    action: str  # created | replaced | unchanged
    backup: str | None = None
    diff: str = ""  # unified diff, key values redacted


def conf_file_text(iface: Interface) -> str:
    """The file content for ``iface``: the stored raw text, byte for byte, else a rendering."""
    return iface.conf_text.reveal() if iface.conf_text is not None else render_conf(iface)


def _file_name(iface: Interface) -> str:
    """``<name>.conf`` (the interface name is the file name, as for wg-quick).

    The name comes from the database, so it must be one wg-quick would accept: a
    tampered ``conf_path`` or interface name cannot point outside the target directory.
    """
    name = Path(iface.conf_path).name if iface.conf_path else f"{iface.name}.conf"
    if not CONF_NAME_RE.match(name):
        raise RestoreError(f"interface {iface.name!r}: {name!r} is not a wg-quick conf file name; refusing")
    return name


def _read_existing(path: Path) -> str | None:
    """The current file's text, None if there is none; unreadable is an error naming the file."""
    try:
        return path.read_bytes().decode("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RestoreError(f"{path}: cannot read: {exc.strerror}") from None


def _lines(text: str) -> list[str]:
    """Lines split at LF only, as wg-quick reads them (splitlines would also split at CR,
    form feed, U+2028 ..., hiding such a character from the diff instead of showing it)."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _diff(old: str | None, new: str, path: str) -> str:
    """A unified diff of two conf texts with key values shown as fingerprints."""
    a = [redact_conf_line(x) for x in _lines(old or "")]
    b = [redact_conf_line(x) for x in _lines(new)]
    path = validate.shown(path, max_len=None)
    label_a = path if old is not None else "/dev/null"
    return "".join(difflib.unified_diff(a, b, label_a, path))


def _write_temp(directory: Path, name: str, text: str) -> str:
    """Write ``text`` to a 0600 temp file next to its target and fsync it; return its path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:  # owns fd from here, closed on every path
            os.fchmod(fh.fileno(), 0o600)
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        os.unlink(tmp)
        raise RestoreError(f"{directory / name}: cannot write: {exc.strerror}") from None
    return tmp


def _backup(target: Path, stamp: str) -> str:
    """Keep the file about to be replaced as ``<file>.wgsyncd-backup-<time>`` (a hard link: atomic)."""
    backup = target.with_name(f"{target.name}.wgsyncd-backup-{stamp}")
    n = 1
    while backup.exists():
        n += 1
        backup = target.with_name(f"{target.name}.wgsyncd-backup-{stamp}-{n}")
    try:
        os.link(target, backup)
    except OSError:  # a filesystem without hard links: a copy is as good a backup
        shutil.copy2(target, backup)
    return str(backup)


def to_dir(loaded: Loaded, directory: str = DEFAULT_DIR, *, dry_run: bool = False) -> list[FileChange]:
    """Write each interface's conf file into ``directory`` atomically (or, dry run, only diff).

    All temp files are written and fsynced first; only then is each renamed into
    place, so a failure while writing leaves every existing file as it was.
    """
    check_loaded(loaded)  # before a name from the database becomes a file name
    root = Path(directory)
    plan: list[tuple[Path, str, FileChange]] = []
    for iface in loaded.interfaces.values():
        target = root / _file_name(iface)
        new = conf_file_text(iface)
        old = _read_existing(target)
        action = "unchanged" if old == new else ("replaced" if old is not None else "created")
        plan.append((target, new, FileChange(str(target), action, diff=_diff(old, new, str(target)))))
    if dry_run:
        return [c for _t, _n, c in plan]
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise RestoreError(f"{root}: cannot create directory: {exc.strerror}") from None
    temps: list[tuple[Path, str, FileChange]] = []
    try:
        for target, new, change in plan:
            if change.action != "unchanged":
                temps.append((target, _write_temp(root, target.name, new), change))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        for target, tmp, change in temps:
            if change.action == "replaced":
                change.backup = _backup(target, stamp)
            os.replace(tmp, target)
    except OSError as exc:
        raise RestoreError(f"{root}: restore of conf files failed: {exc.strerror}") from None
    finally:
        for _target, tmp, _c in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
    _fsync_dir(root)
    return [c for _t, _n, c in plan]


def _fsync_dir(root: Path) -> None:
    """Make the renames durable (a crash right after restore keeps the new files)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
