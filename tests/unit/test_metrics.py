"""metrics.py: the exposition text from a snapshot, counters carried across cycles, the files."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

from wgsyncd import metrics
from wgsyncd.metrics import CycleFacts
from wgsyncd.state import HostState, Interface, Peer, Source, SourceError

KEY_A = "A" * 43 + "="
KEY_B = "B" * 43 + "="
KEY_C = "C" * 43 + "="


def state() -> HostState:
    """Two interfaces; one peer never handshook, one has a tricky name, one is conf-only."""
    when = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
    wg0 = Interface(
        "wg0",
        peers={
            KEY_B: Peer(KEY_B, rx_bytes=10, tx_bytes=20, latest_handshake=when, name='a "b" \\ c\nd'),
            KEY_A: Peer(KEY_A, rx_bytes=0, tx_bytes=0, latest_handshake=None, name=None),
        },
    )
    wg1 = Interface("wg1", peers={KEY_C: Peer(KEY_C, name="conf only")})
    return HostState(
        "h",
        "h",
        when,
        interfaces={"wg1": wg1, "wg0": wg0},
        errors=[SourceError(Source.WGREST, "http://x", "down")],
    )


def samples(text: str) -> dict[str, str]:
    """``name{labels}`` -> value, every sample line of an exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = value
    return out


def test_every_family_has_help_and_type_and_names_follow_the_conventions() -> None:
    snap = metrics.next_snapshot(
        None, CycleFacts("ok", 0.25, 3, 1, 4, {"wgrest": 1}, state()), 10, 1000.0, "1.0"
    )
    text = metrics.render(snap)
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    helps = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP")]
    assert families == helps and len(families) == len(set(families))
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            _, _, name, kind = line.split()
            assert name.startswith("wgsyncd_")
            assert name.endswith("_total") == (kind == "counter"), name
    got = samples(text)
    assert got["wgsyncd_cycle_duration_seconds"] == "0.25"
    assert (
        got['wgsyncd_cycle_result{result="ok"}'] == "1"
        and got['wgsyncd_cycle_result{result="failed"}'] == "0"
    )
    assert got['wgsyncd_source_errors_total{source="wgrest"}'] == "1"
    assert got['wgsyncd_source_errors_total{source="kernel"}'] == "0"
    assert got['wgsyncd_interface_peers{interface="wg1"}'] == "1"
    assert got["wgsyncd_last_success_timestamp_seconds"] == "1000"


def test_label_values_are_escaped_and_peers_come_in_a_stable_order() -> None:
    snap = metrics.next_snapshot(None, CycleFacts("ok", 0.1, state=state()), 10, 1.0, "1.0")
    text = metrics.render(snap)
    b_labels = f'interface="wg0",public_key="{KEY_B}",name="a \\"b\\" \\\\ c\\nd"'
    got = samples(text)
    assert got[f"wgsyncd_peer_receive_bytes_total{{{b_labels}}}"] == "10"
    assert got[f"wgsyncd_peer_transmit_bytes_total{{{b_labels}}}"] == "20"
    assert got[f"wgsyncd_peer_latest_handshake_timestamp_seconds{{{b_labels}}}"] == str(
        int(datetime(2026, 11, 27, 12, tzinfo=UTC).timestamp())
    )
    a_labels = f'interface="wg0",public_key="{KEY_A}",name=""'
    assert got[f"wgsyncd_peer_latest_handshake_timestamp_seconds{{{a_labels}}}"] == "0"
    rx = [line for line in text.splitlines() if line.startswith("wgsyncd_peer_receive_bytes_total{")]
    assert [KEY_A in rx[0], KEY_B in rx[1]] == [True, True]  # sorted by key, not by dict order
    assert not any(KEY_C in line for line in text.splitlines())  # conf-only: no counters to show
    assert "\n" not in snap.peers[1].name or "\\n" in text  # a raw newline never reaches the text


def test_the_per_peer_cap_keeps_the_first_peers_and_counts_the_rest() -> None:
    snap = metrics.next_snapshot(None, CycleFacts("ok", 0.1, state=state()), 1, 1.0, "1.0")
    got = samples(metrics.render(snap))
    assert got["wgsyncd_peer_series_dropped"] == "1"
    assert sum(k.startswith("wgsyncd_peer_receive_bytes_total{") for k in got) == 1


def test_counters_add_up_across_cycles_and_a_failed_cycle_keeps_peers_and_last_success() -> None:
    first = metrics.next_snapshot(None, CycleFacts("ok", 0.1, 5, 0, 4, {}, state()), 10, 100.0, "1")
    second = metrics.next_snapshot(
        first, CycleFacts("partial", 0.2, 2, 0, 3, {"wgrest": 1}, state()), 10, 160.0, "1"
    )
    third = metrics.next_snapshot(second, CycleFacts("failed", 0.3), 10, 220.0, "1")
    assert third.cycles_total == {"ok": 1, "partial": 1, "failed": 1}
    assert third.rows_written_total == 7 and third.db_round_trips_total == 7
    assert third.last_success_time == 160.0 and third.result == "failed" and third.rows_written == 0
    assert third.peers == first.peers and third.interface_peers == first.interface_peers


def test_record_keeps_the_snapshot_and_writes_the_textfile_atomically_0644(tmp_path: Path) -> None:
    textfile = tmp_path / "prom" / "wgsyncd.prom"
    textfile.parent.mkdir()
    old = os.umask(0o077)  # the daemon's unit sets UMask=0077; node_exporter must still read the file
    try:
        metrics.record(str(tmp_path / "state"), str(textfile), CycleFacts("ok", 0.1, 2), cap=10, version="1")
        snap = metrics.record(
            str(tmp_path / "state"), str(textfile), CycleFacts("ok", 0.1, 3), cap=10, version="1"
        )
    finally:
        os.umask(old)
    assert snap.rows_written_total == 5
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "state" / metrics.STATE_FILE).stat().st_mode) == 0o600
    assert os.listdir(textfile.parent) == ["wgsyncd.prom"]  # no temp file left behind
    assert textfile.read_text() == metrics.render(metrics.load(str(tmp_path / "state")))


def test_textfile_setting_auto_follows_node_exporters_directory(tmp_path: Path) -> None:
    assert metrics.textfile_path("auto", str(tmp_path)) == tmp_path / "wgsyncd.prom"
    assert metrics.textfile_path("auto", str(tmp_path / "absent")) is None
    assert metrics.textfile_path(None) is None
    assert metrics.textfile_path("/x/y.prom") == Path("/x/y.prom")


def test_a_damaged_snapshot_restarts_the_counters_instead_of_failing(tmp_path: Path) -> None:
    (tmp_path / metrics.STATE_FILE).write_text('{"time": "not a snapshot"')
    snap = metrics.record(str(tmp_path), None, CycleFacts("ok", 0.1, 2), cap=10, version="1")
    assert snap.rows_written_total == 2 and snap.cycles_total == {"ok": 1}
