"""Timer mode: the between-cycle memo (wgsyncd/memo.py) kept in the state dir between two `wgsyncd sync` runs.

Why: a host synced by a systemd timer starts a new process every time; without this
each run parses every conf file and wgrest answer again, merges every peer again and
loads the host's rows from the database again, though nothing changed. With it, an
unchanged source is recognised by the content hash of its raw bytes (conf file
sha256, UAPI peer block, wgrest JSON object, as the daemon does in memory) and the
writer starts from the view of its last commit, which it still checks against the
database (the host row's last_sync_id) before trusting it (store/known.py).

What is in the file (state dir, mode 0600, owner root): the parsed conf files,
wgrest peers and UAPI peer blocks of the last run (so the private and preshared keys
those sources hold, no more than the conf files themselves hold, which are root-only
0600 as well), the last merge, and the writer's view of its rows (row hashes, counters,
sealed secrets as written to the database) with when the host's history was last pruned
(so a timer prunes hourly, as the daemon does: cycle._prune). Not in it: the host signing key and
signer, the database password, the wgrest token. Keeping the keys out would make every
cached conf parse useless (a parse is one Interface with its key); the file is as
protected as the files it stands for, and is refused unless it is ours and 0600.

Trust: the file is used only when its header names this wgsyncd version and the
fingerprint of this host_id and configuration; its payload must match the sha256 in
the header before it is unpickled. A missing file starts empty; a foreign, corrupted
or truncated one costs one warning line and an empty memo, never the run.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import os
import pickle
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from wgsyncd import __version__, forkwrite, gcpolicy
from wgsyncd.atomicfile import write_atomic_with
from wgsyncd.config import Config
from wgsyncd.memo import Memo
from wgsyncd.state import seal, seal_peer

log = logging.getLogger(__name__)

FILE_NAME = "sync-cache.bin"  # the sources' and merge's memo: rewritten only when it changed
VIEW_FILE = "sync-view.bin"  # the writer's view of its rows: rewritten after every commit
# 2: the view names the memo file; 3: merge rows, wgrest by digest, the writer view per table;
# 4: the memo's ``folded``; 5: the prune times (the memo's ``pruned`` and ``folded``, cycle._prune)
# in the view file, no longer in the memo file
MAGIC = b"wgsyncd sync cache 5\n"
MAX_BYTES = 512 * 1024 * 1024  # far above 100,000 peers; a bigger file is not ours
CHILD_TIMEOUT = 120.0  # seconds the memo file's writer may take (10,000 peers: under 1 s; then killed)


@dataclass
class Cached:
    """What one run hands the next: the source/merge memo and the writer's view of its rows."""

    memo: Memo
    store: Any = None  # store.known.HostMemo of the last commit, or None
    loaded: dict[str, Any] = field(default_factory=dict)  # the memo's entries as loaded (see changed)
    memo_sum: str | None = None  # sha256 of the memo file's payload this memo was read from / written to
    # the child writing the memo file (start_save) and the memo's entries it writes
    pending: tuple[forkwrite.Pending, dict[str, Any]] | None = None


def fingerprint(cfg: Config) -> str:
    """The version, host and every setting that shapes what the memo holds (hashed: no secret in clear)."""
    parts = (__version__, cfg.host_id, cfg.hostname, cfg.interfaces, cfg.exclude_interfaces)
    parts += (cfg.kernel, cfg.conf, cfg.wgrest, _database_target(cfg.database.dsn), cfg.daemon.state_dir)
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _database_target(dsn: str | None) -> tuple[tuple[str, str], ...]:
    """Which database the view belongs to: the DSN's settings without an inline password.

    The file is root-only, but a password hashed into it could still be guessed offline.
    """
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn or "")
    except Exception:
        return ()
    return tuple(sorted((k, str(v)) for k, v in params.items() if k != "password"))


def load(cfg: Config) -> Cached:
    """The last run's memo and view for this host and config, or empty ones (see the module doc)."""
    cached = Cached(Memo().for_host(cfg.host_id))
    memo, memo_sum = _load_one(cfg, FILE_NAME)
    if isinstance(memo, Memo) and memo.host_id == cfg.host_id:
        _seal(memo)
        cached.memo, cached.loaded, cached.memo_sum = memo, _entries(memo), memo_sum
    elif memo is not None:
        log.warning("sync cache %s ignored: unexpected content", Path(cfg.daemon.state_dir) / FILE_NAME)
    view, _sum = _load_one(cfg, VIEW_FILE)
    if isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], float):
        cached.store = _rebase(view[1], time.time() - view[0])
        if cached.store is not None:
            cached.store.last = _last_from(cached.store.last, cached)
        _load_prune_times(cached.memo, cfg.host_id, view[2])
    elif view is not None:
        log.warning("sync cache %s ignored: unexpected content", Path(cfg.daemon.state_dir) / VIEW_FILE)
    return cached


_PRUNE_TIMES = ("pruned", "folded", "fold_from")  # the memo's parts cycle._prune keeps (epoch s)


def _prune_times(memo: Memo, host_id: str) -> dict[str, float]:
    """When this host's history was last pruned and folded whole, and where an unfinished
    whole fold goes on (cycle._prune), as kept in the view file."""
    parts = ((name, getattr(memo, name).get(host_id)) for name in _PRUNE_TIMES)
    return {name: value for name, value in parts if value is not None}


def _load_prune_times(memo: Memo, host_id: str, times: Any) -> None:
    """Put the view file's prune times back into the memo (anything else there: prune now)."""
    if not isinstance(times, dict):
        return
    for name in _PRUNE_TIMES:
        if isinstance(value := times.get(name), float):
            getattr(memo, name)[host_id] = value


def _load_one(cfg: Config, name: str) -> tuple[Any, str | None]:
    """One cache file's object and payload sha256, or (None, None) (missing, foreign, corrupted)."""
    path = Path(cfg.daemon.state_dir) / name
    try:
        data = _read_own(path)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        log.warning("sync cache %s ignored: %s", path, exc)
        return None, None
    cut = data.find(b"\n\n")  # the payload is read in place (a 10,000-peer cache is ~15 MB)
    header, payload = data[: max(cut, 0)], memoryview(data)[cut + 2 :] if cut >= 0 else memoryview(b"")
    lines = header.split(b"\n")
    if len(lines) != 3 or lines[0] + b"\n" != MAGIC:
        log.warning("sync cache %s ignored: not a wgsyncd sync cache (or truncated)", path)
        return None, None
    if lines[1].decode(errors="replace") != fingerprint(cfg):
        log.debug("sync cache %s is of another version, host or configuration: starting afresh", path)
        return None, None
    if hashlib.sha256(payload).hexdigest().encode() != lines[2]:
        log.warning("sync cache %s ignored: its content does not match its checksum (corrupted?)", path)
        return None, None
    try:
        return _unpickle(payload), lines[2].decode()
    except Exception as exc:  # checksum matched, so only a code change gets here
        log.warning("sync cache %s ignored: cannot be read back (%s)", path, type(exc).__name__)
        return None, None


def _unpickle(payload: memoryview) -> Any:
    """pickle.loads with the collector off, the objects then frozen (see gcpolicy.building)."""
    with gcpolicy.building():
        return pickle.loads(payload)


def _seal(memo: Memo) -> None:
    """Seal what was read back (pickle rebuilds editable objects): the never-edit rule holds."""
    for _digest, iface in memo.conf.values():
        seal(iface)
    for part in (memo.uapi, memo.wgrest):
        for entries in part.values():
            for value in entries.values():
                seal_peer(value[1] if isinstance(value, tuple) else value)
    for peer in memo.merge.held_peers():
        seal_peer(peer)


def _read_own(path: Path) -> bytes:
    """The file's bytes, if it is a regular file of ours that nobody else can read or write."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise ValueError(
                f"owner {st.st_uid} / mode {stat.S_IMODE(st.st_mode):04o}, expected ours and 0600"
            )
        if st.st_size > MAX_BYTES:
            raise ValueError(f"{st.st_size} bytes, more than a cache can be")
        return fh.read()


def attach(cached: Cached, conn: Any, host_id: str) -> None:
    """Give the writer on ``conn`` the last run's view of its rows (it re-checks it first)."""
    if cached.store is None:
        return
    from wgsyncd.store import known

    live = known.memo_for(conn, host_id)
    for f in dataclasses.fields(live):
        setattr(live, f.name, getattr(cached.store, f.name))


def start_save(cfg: Config, cached: Cached) -> None:
    """Start writing the memo file, if it changed, in a forked child; save() collects it.

    Called once the sources are read and merged (the memo is final for this run), so
    the pickling overlaps the database write (wgsyncd/forkwrite.py: measured at 10,000
    peers, the save after the commit goes from 0.26-0.5 s to the view file's 0.02-0.04 s).
    Where fork is not possible, save() writes it as before.
    """
    if cached.pending is not None or not changed(cached):
        return
    memo = cached.memo
    entries = _entries(memo)
    pending = forkwrite.start(lambda: _write_memo(cfg, memo))  # in the child, on its own copy
    if pending is not None:
        cached.memo_sum = None  # the child may replace the file any moment: no view may name the old one
        cached.pending = (pending, entries)


def finish(cfg: Config, cached: Cached) -> None:
    """Wait for the memo file's child, if one runs (a failed cycle too: its memo is still right)."""
    if cached.pending is None:
        return
    (pending, entries), cached.pending = cached.pending, None
    try:
        cached.memo_sum = forkwrite.wait(pending, CHILD_TIMEOUT)
        cached.loaded = entries
    except forkwrite.ChildFailed as exc:
        log.warning("cannot keep the sync cache in %s: %s", cfg.daemon.state_dir, exc)
        if exc.killed:  # it died inside write_atomic_with: its temp file holds the memo's keys
            _remove_temp_files(cfg, FILE_NAME)


def _remove_temp_files(cfg: Config, name: str) -> None:
    """Delete the temp files write_atomic_with leaves for ``name`` when its writer is killed."""
    for tmp in Path(cfg.daemon.state_dir).glob(f".{name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def save(cfg: Config, cached: Cached, conn: Any = None) -> None:
    """Keep the memo (if it changed) and the writer's view on ``conn`` for the next run.

    Called after a committed cycle. A failure to write is one warning: the next run
    simply starts colder.
    """
    memo = cached.memo
    try:
        if cached.pending is not None:  # the child wrote the memo as it was when it started
            finish(cfg, cached)
        elif changed(cached):
            cached.memo_sum = None  # until the new file is written: no view may name the old one
            cached.memo_sum = _write_memo(cfg, memo)
            cached.loaded = _entries(memo)
        if conn is not None:
            from wgsyncd.store import known

            live = known.memo_for(conn, cfg.host_id)
            view = _as_ages(live, _last_ref(live.last, cached))
            _write_one(cfg, VIEW_FILE, (time.time(), view, _prune_times(memo, cfg.host_id)))
    except OSError as exc:
        log.warning("cannot keep the sync cache in %s: %s", cfg.daemon.state_dir, exc.strerror or exc)


def _write_memo(cfg: Config, memo: Memo) -> str:
    """The memo file, without the signing key or the prune times (those go in the view file)."""
    kept = {name: getattr(memo, name) for name in ("signers", *_PRUNE_TIMES)}
    for name in kept:
        setattr(memo, name, {})
    try:
        return _write_one(cfg, FILE_NAME, memo)
    finally:
        for name, part in kept.items():
            setattr(memo, name, part)


def _write_one(cfg: Config, name: str, obj: Any) -> str:
    """One cache file: magic, config fingerprint, sha256 of the payload, payload; 0600, atomic.

    The pickle is streamed to the file through the hash, and the header (fixed length)
    written over its placeholder last: at 10,000 peers the payload is tens of MiB that
    would otherwise sit in memory twice (payload, then header + payload). Returns the
    payload's sha256 (a view names the memo file it refers to by it).
    """
    prefix = MAGIC + fingerprint(cfg).encode() + b"\n"
    digest = hashlib.sha256()

    def fill(fh: BinaryIO) -> None:
        fh.write(prefix + b"0" * 64 + b"\n\n")

        class _Hashing:
            def write(self, data: Any) -> int:
                digest.update(data)
                return fh.write(data)

        pickle.dump(obj, _Hashing(), protocol=pickle.HIGHEST_PROTOCOL)
        fh.seek(len(prefix))
        fh.write(digest.hexdigest().encode())

    write_atomic_with(Path(cfg.daemon.state_dir) / name, fill, 0o600, fsync=False)
    return digest.hexdigest()


def _entries(memo: Memo) -> dict[str, Any]:
    """The memo's entries, one level down, as they are now (for changed(): identity compares)."""
    return {
        "conf": dict(memo.conf),
        "uapi": {k: dict(v) for k, v in memo.uapi.items()},
        "wgrest": {k: dict(v) for k, v in memo.wgrest.items()},
        "merge": dict(memo.merge.interfaces),  # an entry is new whenever a peer was merged anew
    }


def changed(cached: Cached) -> bool:
    """True unless every memo entry is the very object that was loaded (nothing was parsed or merged anew)."""
    if not cached.loaded:
        return True
    now = _entries(cached.memo)
    return any(not _same(now[part], cached.loaded[part]) for part in now)


def _same(a: dict[Any, Any], b: dict[Any, Any]) -> bool:
    """Same keys, and each value the same object (nested one level for per-interface tables)."""
    if a.keys() != b.keys():
        return False
    for key, value in a.items():
        old = b[key]
        if isinstance(value, dict) and isinstance(old, dict):
            if not _same(value, old):
                return False
        elif value is not old:
            return False
    return True


def _as_ages(store_memo: Any, last: Any = None) -> Any:
    """A copy of the writer's memo: its view and row hashes, monotonic times as ages (<= 0).

    Load adds its own monotonic clock and subtracts the wall time since the save (_rebase).
    Not kept: the object-identity maps (rows, committed): reading them back costs more
    than building those row values again. ``last`` replaces the memo's ``last`` (see _last_ref).
    """
    now = time.monotonic()
    out = copy.copy(store_memo)
    out.rows, out.committed, out.last = {}, {}, last
    if out.view is not None:
        out.view = dataclasses.replace(out.view, loaded_at=out.view.loaded_at - now)
    if out.drift is not None:
        out.drift = (out.drift[0], out.drift[1] - now)
    return out


def _rebase(store_memo: Any, elapsed: float) -> Any:
    """The saved writer's memo with its ages moved onto this run's monotonic clock.

    The writer trusts its view for store.known.RELOAD_EVERY seconds: measured by the
    wall clock since the save, never by a monotonic clock that may have started again.
    """
    if elapsed < 0 or not hasattr(store_memo, "view"):  # the clock went back: age unknown
        return None
    now = time.monotonic()
    if store_memo.view is not None:
        store_memo.view.loaded_at = now + store_memo.view.loaded_at - elapsed
    if store_memo.drift is not None:
        store_memo.drift = (store_memo.drift[0], now + store_memo.drift[1] - elapsed)
    return store_memo


_LAST_REF = "merged interfaces of memo file"


def _last_ref(last: Any, cached: Cached) -> Any:
    """What the writer's ``last`` (HostMemo.same_state) becomes in the view file: a reference, or None.

    Why: the last commit was planned from the merge memo's own Interface objects; kept
    as objects in the view file they would be a second copy (4 MB at 10,000 peers) that
    is never the same object as the memo's, so same_state would fail on every timer run
    and the writer would plan all 10,000 peers again. Kept instead: the names, sources
    and interface ids, and the sha256 of the memo file whose merged interfaces they
    were -- only when every interface is exactly that memo's merged one. Anything else
    is None: the next run plans in full, as the writer does after any doubt.
    """
    if last is None or cached.memo_sum is None:
        return None
    ifaces, sources, ids = last
    merged = cached.memo.merge.interfaces
    for name, (iface, peers) in ifaces.items():
        entry = merged.get(name)
        if entry is None or entry.merged is not iface or peers != iface.peers:
            return None
    return (_LAST_REF, cached.memo_sum, tuple(ifaces), dict(sources), dict(ids))


def _last_from(ref: Any, cached: Cached) -> Any:
    """The writer's ``last`` rebuilt from the loaded memo, if the view names that very memo file."""
    if not (isinstance(ref, tuple) and len(ref) == 5 and ref[0] == _LAST_REF):
        return None
    _tag, memo_sum, names, sources, ids = ref
    merged = cached.memo.merge.interfaces
    if memo_sum != cached.memo_sum or not all(name in merged for name in names):
        return None
    ifaces = {name: (merged[name].merged, dict(merged[name].merged.peers)) for name in names}
    return (ifaces, sources, ids)
