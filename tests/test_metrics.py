"""The daemon's Prometheus textfile, checked by the real tools: promtool, and node_exporter scraping it.

A real `wgsyncd run` syncs a wireguard-go interface that just made a real
handshake into a throwaway PostgreSQL; its textfile must pass `promtool check
metrics`, equal what `wgsyncd metrics` prints, and come back unchanged (values
and escaped labels) from Debian's prometheus-node-exporter scraped over loopback.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.beds import unavailable
from tests.beds.host import Host
from wgsyncd import metrics
from wgsyncd.metrics import CycleFacts

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[1]
PROMTOOL = "/usr/bin/promtool"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
TRICKY_NAME = 'branch "B" \\ office'


def _parse_labels(text: str) -> tuple[tuple[str, str], ...]:
    """``a="x",b="y\\"z"`` -> sorted ((a, x), (b, y"z)), unescaping as the text format says."""
    out, i = [], 0
    while i < len(text):
        eq = text.index("=", i)
        key, i, value = text[i:eq].strip(","), eq + 2, []
        while text[i] != '"':
            if text[i] == "\\":
                value.append({"n": "\n"}.get(text[i + 1], text[i + 1]))
                i += 2
            else:
                value.append(text[i])
                i += 1
        out.append((key, "".join(value)))
        i += 1
    return tuple(sorted(out))


def samples(text: str, prefix: str = "wgsyncd_") -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(name, sorted labels) -> value for every sample line starting with ``prefix``.

    Labels are parsed (and unescaped), because node_exporter re-serialises them in its own order.
    """
    out = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            series, _, value = line.rpartition(" ")
            name, _, labels = series.partition("{")
            out[(name, _parse_labels(labels[:-1]))] = float(value)
    return out


def one(got: dict, metric: str, **labels: str) -> float:
    """The value of one series in a :func:`samples` result."""
    return got[(metric, tuple(sorted(labels.items())))]


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    """`promtool check metrics` on ``text`` (stdin); lint problems come back on stderr."""
    if not os.access(PROMTOOL, os.X_OK):
        unavailable("promtool", f"{PROMTOOL} missing (apt-get install prometheus)")
    return subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def node_exporter(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """Debian's node_exporter with only the textfile collector, on a loopback port: (dir, URL)."""
    if not os.access(NODE_EXPORTER, os.X_OK):
        unavailable("node_exporter", f"{NODE_EXPORTER} missing (apt-get install prometheus-node-exporter)")
    directory = tmp_path / "textfile"
    directory.mkdir()
    url = f"http://127.0.0.1:{free_port()}/metrics"
    proc = subprocess.Popen(
        [
            NODE_EXPORTER,
            f"--web.listen-address={url.split('/')[2]}",
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={directory}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
                    raise AssertionError(f"node_exporter did not answer on {url}: {err[-1000:]}") from None
                time.sleep(0.05)  # polling the listener with a deadline
        yield directory, url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def scrape(url: str) -> str:
    """One scrape, as Prometheus would do it."""
    return urllib.request.urlopen(url, timeout=5).read().decode()


def test_promtool_accepts_the_exposition_and_rejects_a_broken_one() -> None:
    from tests.unit.test_metrics import state

    text = metrics.render(
        metrics.next_snapshot(None, CycleFacts("ok", 0.1, 1, 0, 2, {}, state()), 10, 1.0, "1")
    )
    res = promtool_check(text)
    assert res.returncode == 0 and res.stdout.strip() == "" and res.stderr.strip() == "", (
        res.stdout + res.stderr
    )
    # the check can fail: a counter without _total and an unescaped quote are both reported
    bad = promtool_check(text.replace("wgsyncd_rows_written_total", "wgsyncd_rows_written"))
    assert 'counter metrics should have "_total" suffix' in bad.stdout + bad.stderr
    assert promtool_check(text.replace('\\"b\\"', '"b"')).returncode != 0


def test_node_exporter_serves_our_series_with_the_escaped_labels_intact(node_exporter) -> None:
    from tests.unit.test_metrics import state

    directory, url = node_exporter
    snap = metrics.next_snapshot(
        None, CycleFacts("partial", 0.5, 3, 2, 4, {"wgrest": 1}, state()), 10, 5.0, "1"
    )
    (directory / "wgsyncd.prom").write_text(metrics.render(snap))
    got = samples(scrape(url))
    assert got == samples(metrics.render(snap))
    assert one(samples(scrape(url), "node_textfile_scrape_error"), "node_textfile_scrape_error") == 0
    assert (
        one(
            got,
            "wgsyncd_peer_receive_bytes_total",
            interface="wg0",
            public_key="B" * 43 + "=",
            name='a "b" \\ c\nd',
        )
        == 10
    )


@pytest.mark.root
def test_daemon_textfile_is_scraped_with_real_handshake_values(
    tmp_path, wg_pair, pg_cluster, node_exporter
) -> None:
    directory, url = node_exporter
    host = Host(tmp_path, None, pg_cluster.create_database(), "host-metrics")
    host.ifaces = {wg_pair.a.name: wg_pair.a}
    peer_pub = wg_pair.a.dump().splitlines()[1].split("\t")[0]
    conf = host.conf_dir / f"{wg_pair.a.name}.conf"
    conf.write_text(
        f"[Interface]\nPrivateKey = {wg_pair.a_key}\nListenPort = 51820\n\n"
        f"# Name = {TRICKY_NAME}\n[Peer]\nPublicKey = {peer_pub}\nEndpoint = 192.0.2.2:51820\n"
        "AllowedIPs = 198.51.100.2/32\n"
    )
    conf.chmod(0o600)
    host.write_config(
        f'[daemon]\nstate_dir = "{host.state_dir}"\ninterval = 3600.0\n'
        f'[metrics]\ntextfile = "{directory / "wgsyncd.prom"}"\nmax_peer_series = 100\n'
    )
    wg_pair.ping(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WGSYNCD_", "NOTIFY_", "WATCHDOG_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "wgsyncd", "--config", str(host.config), "run"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    prom = directory / "wgsyncd.prom"
    try:
        deadline = time.monotonic() + 60
        while not prom.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            assert time.monotonic() < deadline, "no textfile within 60 s"
            time.sleep(0.05)  # polling for the first cycle's file with a deadline
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    text = prom.read_text()
    res = promtool_check(text)
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr
    assert host.wgsyncd("metrics").stdout == text  # the CLI prints the same, from the state dir
    # the kernel's own numbers: peer line of `wg show dump` (rx, tx, handshake)
    cols = next(line.split("\t") for line in wg_pair.a.dump().splitlines()[1:] if line.startswith(peer_pub))
    handshake, rx, tx = int(cols[4]), int(cols[5]), int(cols[6])
    assert handshake > 0 and rx > 0 and tx > 0
    labels = {"interface": wg_pair.a.name, "public_key": peer_pub, "name": TRICKY_NAME}
    got = samples(scrape(url))
    assert one(got, "wgsyncd_peer_receive_bytes_total", **labels) == rx
    assert one(got, "wgsyncd_peer_transmit_bytes_total", **labels) == tx
    assert one(got, "wgsyncd_peer_latest_handshake_timestamp_seconds", **labels) == handshake
    assert (
        one(got, "wgsyncd_cycle_result", result="ok") == 1
        and one(got, "wgsyncd_cycles_total", result="ok") == 1
    )
    assert one(got, "wgsyncd_interface_peers", interface=wg_pair.a.name) == 1
    assert one(got, "wgsyncd_rows_written_total") > 0 and one(got, "wgsyncd_db_round_trips_total") > 0
    assert one(got, "wgsyncd_last_success_timestamp_seconds") > time.time() - 120
    assert oct(prom.stat().st_mode & 0o777) == "0o644"
    assert one(got, "wgsyncd_peer_series_dropped") == 0
