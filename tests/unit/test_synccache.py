"""The timer-mode cache (wgsyncd/synccache.py): kept, trusted only for its host and config, never fatal."""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import time
import uuid
from pathlib import Path

import pytest

from wgsyncd import synccache
from wgsyncd.config import ConfConfig, Config, DaemonConfig
from wgsyncd.memo import Memo
from wgsyncd.sources import conffiles
from wgsyncd.state import Interface, Peer, SealedInterface, SealedPeer, Secret
from wgsyncd.store import known

PRIV = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
PUB = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
CONF = f"[Interface]\nPrivateKey = {PRIV}\nListenPort = 51820\n\n[Peer]\nPublicKey = {PUB}\nAllowedIPs = 10.0.0.2/32\n"  # noqa: E501


def make_cfg(tmp_path: Path, host_id: str = "h1", **kw: object) -> Config:
    """A config whose state dir and conf dir live under ``tmp_path``."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    confdir = tmp_path / "wg"
    confdir.mkdir(exist_ok=True)
    return Config(
        host_id=host_id,
        hostname="h",
        conf=ConfConfig(directory=str(confdir)),
        daemon=DaemonConfig(state_dir=str(state)),
        **kw,  # type: ignore[arg-type]
    )


def filled_memo(cfg: Config) -> Memo:
    """A memo as one run leaves it: a conf parse, peer blocks, a signer that must not be kept."""
    (Path(cfg.conf.directory) / "wg0.conf").write_text(CONF)
    memo = Memo().for_host(cfg.host_id)
    conffiles.read(cfg.conf, None, memo.conf)
    memo.uapi["/run/wireguard/wg1.sock"] = {b"public_key=00\n": Peer(PUB, allowed_ips=("10.0.0.3/32",))}
    memo.signers[("x", "y")] = "a signer holding the signing key"  # type: ignore[assignment]
    memo.pruned[cfg.host_id] = memo.folded[cfg.host_id] = 1e9  # in the view file, not the memo file
    return memo


def cache_file(cfg: Config, name: str = synccache.FILE_NAME) -> Path:
    return Path(cfg.daemon.state_dir) / name


def test_a_saved_memo_comes_back_sealed_without_the_signer_and_root_only(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    memo = filled_memo(cfg)
    synccache.save(cfg, synccache.Cached(memo))
    assert memo.signers and memo.pruned and memo.folded, "saving must not take them from the live memo"
    assert stat.S_IMODE(cache_file(cfg).stat().st_mode) == 0o600
    assert b"signing key" not in cache_file(cfg).read_bytes()
    back = synccache.load(cfg).memo
    assert back.signers == {} and back.pruned == back.folded == {} and back.host_id == "h1"
    ((_digest, iface),) = back.conf.values()
    assert type(iface) is SealedInterface and iface.listen_port == 51820
    assert all(type(p) is SealedPeer for p in iface.peers.values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        iface.listen_port = 1  # type: ignore[misc]
    assert back.uapi == memo.uapi


def test_an_unchanged_conf_file_is_not_parsed_again_by_the_next_run(tmp_path: Path, monkeypatch) -> None:
    cfg = make_cfg(tmp_path)
    synccache.save(cfg, synccache.Cached(filled_memo(cfg)))
    cached = synccache.load(cfg)

    def no_parse(*_a: object) -> Interface:
        raise AssertionError("parsed again")

    monkeypatch.setattr(conffiles, "parse_conf", no_parse)
    result = conffiles.read(cfg.conf, None, cached.memo.conf)
    assert result.interfaces["wg0"] is next(iter(cached.memo.conf.values()))[1]
    assert not synccache.changed(cached)  # nothing new: the memo file is not written again
    (Path(cfg.conf.directory) / "wg0.conf").write_text(CONF.replace("51820", "51821"))
    monkeypatch.undo()
    assert conffiles.read(cfg.conf, None, cached.memo.conf).interfaces["wg0"].listen_port == 51821
    assert synccache.changed(cached)


def test_an_unchanged_memo_is_not_rewritten_a_changed_one_is(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    synccache.save(cfg, synccache.Cached(filled_memo(cfg)))
    cached = synccache.load(cfg)
    before = cache_file(cfg).stat()
    synccache.save(cfg, cached)
    assert cache_file(cfg).stat().st_ino == before.st_ino  # the same file: not written
    cached.memo.uapi.clear()
    synccache.save(cfg, cached)
    assert cache_file(cfg).stat().st_ino != before.st_ino
    assert synccache.load(cfg).memo.uapi == {}


@pytest.mark.parametrize(
    "change",
    [
        lambda c: dataclasses.replace(c, host_id="h2"),
        lambda c: dataclasses.replace(c, interfaces=("wg*",)),
        lambda c: dataclasses.replace(c, conf=dataclasses.replace(c.conf, directory=c.conf.directory + "/x")),
    ],
    ids=["host_id", "interfaces", "conf directory"],
)
def test_a_cache_of_another_host_or_config_is_never_used(tmp_path: Path, change, caplog) -> None:
    cfg = make_cfg(tmp_path)
    synccache.save(cfg, synccache.Cached(filled_memo(cfg)))
    other = change(cfg)
    with caplog.at_level(logging.WARNING):
        memo = synccache.load(other).memo
    assert memo.conf == {} and memo.uapi == {} and memo.host_id == other.host_id
    assert not caplog.records  # not a fault: a new host or config simply starts afresh


def test_the_binding_to_a_database_holds_no_password(tmp_path: Path) -> None:
    """The header binds the cache to the database, not to a password that could be guessed from it."""
    cfg = make_cfg(tmp_path)

    def with_dsn(dsn: str):
        return dataclasses.replace(cfg, database=dataclasses.replace(cfg.database, dsn=dsn))

    one = synccache.fingerprint(with_dsn("host=db dbname=wgsyncd user=h1 password=hunter2"))
    assert one == synccache.fingerprint(with_dsn("host=db dbname=wgsyncd user=h1 password=other"))
    assert one != synccache.fingerprint(with_dsn("host=db dbname=elsewhere user=h1 password=hunter2"))
    assert "hunter2" not in repr(synccache._database_target("host=db password=hunter2"))


@pytest.mark.parametrize(
    "spoil",
    [
        lambda data: data[: len(data) // 2],  # truncated (a crash mid-write of a non-atomic copy)
        lambda data: data[:-10] + bytes(10),  # corrupted payload: the checksum says so
        lambda data: data[:5],  # truncated inside the header
        lambda data: b"garbage\n\n" + data,  # not ours at all
        lambda data: b"",
    ],
    ids=["truncated", "corrupted", "header cut", "foreign", "empty"],
)
def test_a_corrupted_or_truncated_cache_costs_one_warning_and_nothing_else(
    tmp_path: Path, spoil, caplog
) -> None:
    cfg = make_cfg(tmp_path)
    synccache.save(cfg, synccache.Cached(filled_memo(cfg)))
    path = cache_file(cfg)
    path.write_bytes(spoil(path.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="wgsyncd.synccache"):
        memo = synccache.load(cfg).memo
    assert memo.conf == {} and memo.host_id == "h1"
    assert len(caplog.records) == 1 and str(path) in caplog.records[0].getMessage()


def test_a_cache_others_can_read_or_write_is_refused(tmp_path: Path, caplog) -> None:
    cfg = make_cfg(tmp_path)
    synccache.save(cfg, synccache.Cached(filled_memo(cfg)))
    cache_file(cfg).chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="wgsyncd.synccache"):
        assert synccache.load(cfg).memo.conf == {}
    assert "0644" in caplog.text
    cache_file(cfg).chmod(0o600)
    link = cache_file(cfg).with_name("elsewhere")
    cache_file(cfg).rename(link)
    cache_file(cfg).symlink_to(link)  # a symlink is not followed
    assert synccache.load(cfg).memo.conf == {}


def test_an_unwritable_state_dir_is_one_warning(tmp_path: Path, caplog) -> None:
    cfg = make_cfg(tmp_path)
    cfg.daemon.state_dir = str(tmp_path / "missing")
    with caplog.at_level(logging.WARNING, logger="wgsyncd.synccache"):
        synccache.save(cfg, synccache.Cached(filled_memo(cfg)))
    assert len(caplog.records) == 1 and "cannot keep the sync cache" in caplog.text


class _Conn:
    """Stands in for a connection object only as the key of store.known's per-connection memo."""


def _view(loaded_at: float) -> known.View:
    return known.View(uuid.uuid4(), loaded_at, {"peers": {("wg0", PUB): ("ab" * 32, False)}}, {}, {}, None)


def test_the_writers_view_is_kept_with_its_age_and_dropped_when_the_clock_went_back(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    conn = _Conn()
    live = known.memo_for(conn, "h1")
    live.view = _view(time.monotonic() - 100)  # loaded 100 s ago
    live.rows[("peers", "x")] = (object(), ())  # object-identity maps are not kept
    synccache.save(cfg, synccache.Cached(Memo().for_host("h1")), conn)
    assert live.view.loaded_at <= time.monotonic() - 100  # the live view is untouched
    cached = synccache.load(cfg)
    assert cached.store.rows == {}
    age = time.monotonic() - cached.store.view.loaded_at
    assert 100 <= age < 160 and cached.store.view.hashes == live.view.hashes
    fresh = _Conn()
    synccache.attach(cached, fresh, "h1")
    assert known.memo_for(fresh, "h1").view is cached.store.view
    # a save "in the future" (the wall clock was set back since): the age is unknown
    path = cache_file(cfg, synccache.VIEW_FILE)
    later = time.time() + 3600
    synccache._write_one(cfg, synccache.VIEW_FILE, (later, synccache._as_ages(live), {}))
    assert path.exists() and synccache.load(cfg).store is None


def test_private_keys_in_the_cache_are_those_of_root_only_conf_files(tmp_path: Path) -> None:
    """The decision the module doc states: keys are kept, in a file as protected as the conf files."""
    cfg = make_cfg(tmp_path)
    synccache.save(cfg, synccache.Cached(filled_memo(cfg)))
    ((_d, iface),) = synccache.load(cfg).memo.conf.values()
    assert isinstance(iface.private_key, Secret) and iface.private_key.reveal() == PRIV
    st = cache_file(cfg).stat()
    assert st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(Path(cfg.daemon.state_dir).stat().st_mode) & 0o077 == 0


def _merged(cfg: Config, memo: Memo) -> object:
    """One real read of the conf dir and merge through ``memo`` (what a timer run does)."""
    from datetime import UTC, datetime

    from wgsyncd import merge

    res = conffiles.read(cfg.conf, None, memo.conf)
    return merge.merge(cfg.host_id, cfg.hostname, [res], datetime.now(UTC), memo.merge)


def _commit_and_save(cfg: Config, memo: Memo, planned_from: Memo | None = None) -> None:
    """A commit of the state merged through ``planned_from`` (default ``memo``), then the run's save."""
    conn = _Conn()
    live = known.memo_for(conn, cfg.host_id)
    live.view = _view(time.monotonic())
    live.remember(_merged(cfg, planned_from or memo))
    synccache.save(cfg, synccache.Cached(memo), conn)


def test_the_next_run_knows_an_unchanged_state_is_the_one_it_committed(tmp_path: Path) -> None:
    """Timer mode: the view names the memo file, so same_state holds and no peer is planned again."""
    cfg = make_cfg(tmp_path)
    _commit_and_save(cfg, filled_memo(cfg))
    assert b"[Interface]" not in cache_file(cfg, synccache.VIEW_FILE).read_bytes()  # no second copy
    cached = synccache.load(cfg)
    assert cached.store.last is not None
    state = _merged(cfg, cached.memo)  # the next run reads the same file
    assert cached.store.same_state(state)
    (Path(cfg.conf.directory) / "wg0.conf").write_text(CONF.replace("51820", "51821"))
    cached = synccache.load(cfg)
    assert not cached.store.same_state(_merged(cfg, cached.memo))  # a changed file is planned


def test_a_view_naming_another_memo_file_plans_in_full(tmp_path: Path) -> None:
    """A memo file replaced after the view was written (or never written): the view's last is dropped."""
    cfg = make_cfg(tmp_path)
    _commit_and_save(cfg, filled_memo(cfg))
    other = filled_memo(cfg)
    other.uapi.clear()
    synccache._write_one(cfg, synccache.FILE_NAME, other)  # e.g. a crash between the two writes
    cached = synccache.load(cfg)
    assert cached.store is not None and cached.store.view is not None and cached.store.last is None


def test_a_committed_state_not_from_the_memo_is_not_named(tmp_path: Path) -> None:
    """last built from objects the memo does not hold (another merge): nothing is claimed."""
    cfg = make_cfg(tmp_path)
    memo = filled_memo(cfg)
    _merged(cfg, memo)
    _commit_and_save(cfg, memo, planned_from=Memo().for_host("h1"))  # merged through another memo
    assert synccache.load(cfg).store.last is None


def test_a_forked_child_writes_the_memo_as_it_was_when_started(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    memo = filled_memo(cfg)
    cached = synccache.Cached(memo)
    synccache.start_save(cfg, cached)
    assert cached.pending is not None, "a changed memo starts a child"
    pid = cached.pending[0].pid
    assert pid != os.getpid()
    memo.uapi["/run/wireguard/wg9.sock"] = {}  # an edit after the start is not in this file
    synccache.save(cfg, cached)
    assert cached.pending is None  # collected (forkwrite.wait reaps: tests/unit/test_forkwrite.py)
    assert memo.signers and memo.pruned, "the child's copy lost them, not the live memo"
    assert b"signing key" not in cache_file(cfg).read_bytes()
    back = synccache.load(cfg)
    assert back.memo_sum == cached.memo_sum is not None
    assert set(back.memo.uapi) == {"/run/wireguard/wg1.sock"}
    assert synccache.changed(cached), "the live memo moved on since the child's snapshot"
    assert stat.S_IMODE(cache_file(cfg).stat().st_mode) == 0o600


def test_an_unchanged_memo_starts_no_child(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    synccache.save(cfg, synccache.Cached(filled_memo(cfg)))
    cached = synccache.load(cfg)
    synccache.start_save(cfg, cached)
    assert cached.pending is None


def test_a_child_that_cannot_write_is_one_warning_and_names_no_memo_file(tmp_path: Path, caplog) -> None:
    cfg = make_cfg(tmp_path)
    cached = synccache.Cached(filled_memo(cfg))
    cfg.daemon.state_dir = str(tmp_path / "missing")
    synccache.start_save(cfg, cached)
    assert cached.pending is not None
    with caplog.at_level(logging.WARNING, logger="wgsyncd.synccache"):
        synccache.finish(cfg, cached)
        synccache.finish(cfg, cached)  # a second call (the CLI's finally) is a no-op
    assert cached.pending is None and cached.memo_sum is None
    assert len(caplog.records) == 1 and "cannot keep the sync cache" in caplog.text
    assert "No such file or directory" in caplog.text
    assert synccache.changed(cached), "nothing was kept: the next save tries again"


def test_a_child_killed_mid_write_leaves_no_temp_file_with_the_memos_keys(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    """The child hangs inside the write (its temp file made); killed at the timeout, its file goes too."""
    cfg = make_cfg(tmp_path)
    cached = synccache.Cached(filled_memo(cfg))

    def hang(obj, fh, protocol=None) -> None:
        fh.write(b"part of a pickle, with keys in it")
        time.sleep(60)

    monkeypatch.setattr(synccache.pickle, "dump", hang)  # the child has its own copy of this patch
    monkeypatch.setattr(synccache, "CHILD_TIMEOUT", 1.0)
    synccache.start_save(cfg, cached)
    assert cached.pending is not None
    temp = f".{synccache.FILE_NAME}.*.tmp"
    deadline = time.monotonic() + 30
    while not list(Path(cfg.daemon.state_dir).glob(temp)) and time.monotonic() < deadline:
        time.sleep(0.01)  # a poll with a deadline: the child has made its temp file
    assert list(Path(cfg.daemon.state_dir).glob(temp)), "the child started writing"
    with caplog.at_level(logging.WARNING, logger="wgsyncd.synccache"):
        synccache.finish(cfg, cached)
    assert "no answer within 1 s" in caplog.text
    assert list(Path(cfg.daemon.state_dir).glob(temp)) == []
    assert not cache_file(cfg).exists() and cached.memo_sum is None


def test_prune_times_are_kept_in_the_view_file_and_never_rewrite_the_memo_file(tmp_path: Path) -> None:
    """memo.pruned / memo.folded (cycle._prune) change hourly / daily: kept in the small view
    file written after every commit, so a timer prunes hourly as the daemon does, while the
    memo file (tens of MiB at 10,000 peers) is rewritten only when a source changed."""
    cfg = make_cfg(tmp_path)
    synccache.save(cfg, synccache.Cached(filled_memo(cfg)), _Conn())
    cached = synccache.load(cfg)
    assert cached.memo.pruned == cached.memo.folded == {cfg.host_id: 1e9}  # filled_memo's
    memo_file = cache_file(cfg).read_bytes()
    cached.memo.pruned[cfg.host_id], cached.memo.folded[cfg.host_id] = 1e9 + 3600.0, 1e9
    cached.memo.fold_from[cfg.host_id] = 5e8  # a whole fold under way (store/retention.py)
    assert not synccache.changed(cached)
    synccache.save(cfg, cached, _Conn())
    assert cache_file(cfg).read_bytes() == memo_file  # not rewritten
    again = synccache.load(cfg)
    assert again.memo.pruned == {cfg.host_id: 1e9 + 3600.0} and again.memo.folded == {cfg.host_id: 1e9}
    assert again.memo.fold_from == {cfg.host_id: 5e8}
    assert not synccache.changed(again)
    in_memo_file = synccache._load_one(cfg, synccache.FILE_NAME)[0]
    assert in_memo_file.pruned == in_memo_file.folded == in_memo_file.fold_from == {}
    # a save without a connection (none was made) writes no view: the next run prunes
    synccache.save(cfg, again)
    assert synccache.load(cfg).memo.pruned == {cfg.host_id: 1e9 + 3600.0}


def test_prune_times_recorded_after_the_child_started_are_kept_too(tmp_path: Path) -> None:
    """cli sync: the memo file's child is forked once the sources are merged, cycle._prune runs
    after the commit. What it records must still reach the next run, or an active timer-mode
    host (its sources change every run) prunes and folds its whole history on every run."""
    cfg = make_cfg(tmp_path)
    cached = synccache.Cached(filled_memo(cfg))
    synccache.start_save(cfg, cached)
    assert cached.pending is not None
    cached.memo.pruned[cfg.host_id] = cached.memo.folded[cfg.host_id] = time.time()  # after the fork
    synccache.save(cfg, cached, _Conn())
    again = synccache.load(cfg)
    assert again.memo.folded == cached.memo.folded and again.memo.pruned == cached.memo.pruned
    assert again.memo_sum == cached.memo_sum and not synccache.changed(again)


def test_prune_times_of_another_shape_mean_prune_now(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    live = known.memo_for(_Conn(), "h1")
    synccache._write_one(cfg, synccache.VIEW_FILE, (time.time(), synccache._as_ages(live), ("x", 1.0)))
    assert synccache.load(cfg).memo.pruned == {} and synccache.load(cfg).store is not None
    odd = {"pruned": "1e9", "folded": 1e9, "other": 2.0}
    synccache._write_one(cfg, synccache.VIEW_FILE, (time.time(), synccache._as_ages(live), odd))
    back = synccache.load(cfg).memo
    assert back.pruned == {} and back.folded == {"h1": 1e9}
