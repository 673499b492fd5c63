"""Timer mode through the real CLI: the memo file a forked child writes is the one the next run trusts.

`wgsyncd sync` pickles its memo in a child while it writes to the database
(wgsyncd/forkwrite.py); the writer's view, written after the commit, names that
file by the sha256 the child answered. If the two did not meet, the next run would
re-plan every peer (the view's `last` would be None).
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.beds.host import Host
from wgsyncd import config, synccache

pytestmark = pytest.mark.postgres


def test_the_next_run_trusts_the_memo_file_the_child_wrote(tmp_path, wg_bed, pg_cluster) -> None:
    host = Host(tmp_path, wg_bed, pg_cluster.create_database(), "host-timer")
    name = host.add_interface(20)
    host.write_config()
    out = host.wgsyncd("sync")
    assert "synced 1 interface" in out.stdout, out.stdout + out.stderr
    assert "sync cache" not in out.stderr  # no warning: the child wrote it, the parent collected it

    cfg = config.load(str(host.config))
    cfg = dataclasses.replace(cfg, daemon=dataclasses.replace(cfg.daemon, state_dir=str(host.state_dir)))
    cached = synccache.load(cfg)
    assert len(cached.memo.merge.interfaces[name].rows) == 20
    assert cached.memo.signers == {}
    assert cached.store is not None and cached.store.last is not None, "the view names the child's memo file"
    # the prune and whole-history fold _prune recorded after the child was forked: kept (in
    # the view file), or the next run would prune and fold the whole history again
    assert cfg.host_id in cached.memo.folded and cfg.host_id in cached.memo.pruned

    again = host.wgsyncd("sync")  # timer mode: an unchanged host
    assert "synced 1 interface, 20 peers" in again.stdout and "rows written" not in again.stdout
    # within the hour, a timer run does not prune at all (as the daemon): both times stay
    after = synccache.load(cfg).memo
    assert after.folded == cached.memo.folded and after.pruned == cached.memo.pruned
