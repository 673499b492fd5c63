"""`restore --apply` on a real kernel WireGuard interface, inside the kernel VM (issue 7).

Started by /job/run.sh (tests/beds/qemu.py) in the same boot as the reader checks::

    python3.11 -S -m kernel_vm.restore_vm setup                         # once, root namespace
    ip netns exec nsR python3.11 -S -m kernel_vm.restore_vm run --backend wg
    ip netns exec nsR python3.11 -S -m kernel_vm.restore_vm run --backend netlink --label debian
    ...                                                                  # once per pyroute2

The target ``wgR`` lives in namespace nsR with a live far end ``wgS`` in nsS over veth,
so the restore never touches the reader's interfaces and a real session can prove that
an unchanged peer is left alone. Each run, for its backend:

1. wipe: delete wgR and create it empty; apply version A (300 running peers: psk,
   v4/v6 endpoints, keepalive, several allowed IPs, one peer with 300) -> `wg show wgR
   dump` equals the dump rendered from A (handshake and counters aside);
2. handshake with wgS through the tunnel, apply A again -> no change at all, and the
   live peer keeps its handshake time and counters;
3. dry run of version C (peers removed, changed, added; fwmark changed) changes
   nothing; apply C -> exactly the expected changes, the dump equals C's, in the
   kernel's peer order, and the live session survives.

The ``wg`` run has no pyroute2 on its path (the `wg syncconf` backend must not need it).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kernel_vm import cases
from kernel_vm.runner import (
    HANDSHAKE_TIMEOUT,
    IP,
    STATE_DIR,
    WG,
    CommandError,
    log,
    random_key,
    run_check,
    sh,
    wait_for_handshake,
)

NS_R, NS_S = "nsR", "nsS"
IFACE, FAR = "wgR", "wgS"
PORT = 51820
R_ADDR, S_ADDR = "198.51.100.1", "198.51.100.2"  # tunnel addresses, inside nsR / nsS only
VERSIONS_FILE = STATE_DIR / "restore-versions.json"
GENERATED = 297  # + the live peer, the 300-IP and the 1,000-IP peer = 300 running peers
REMOVED = range(0, 20)
CHANGED = range(20, 50)
ADDED = 20
# A session older than this makes the next packet start a new handshake (REKEY_AFTER_TIME
# is 120 s): a ping later than that cannot prove the session was kept.
REKEY_AFTER = 100.0


# ---------------------------------------------------------------- the versions (plain JSON specs)


def _peer(
    public: str,
    allowed: list[str],
    psk: str | None = None,
    endpoint: str | None = None,
    keepalive: int = 0,
    disabled: bool = False,
) -> dict:
    """One peer of a version, as JSON (keys in clear: this file never leaves the VM's tmpfs)."""
    return {
        "public": public,
        "psk": psk,
        "allowed": allowed,
        "endpoint": endpoint,
        "keepalive": keepalive,
        "disabled": disabled,
    }


def _generated(i: int) -> dict:
    """The i-th generated peer: psk on odd, v4/v6/no endpoint by i%3, keepalive every 4th, 2-3 IPs."""
    endpoint = f"203.0.113.{i % 250 + 1}:{1000 + i}" if i % 3 == 0 else f"[2001:db8:e::{i:x}]:{1000 + i}"
    allowed = [f"10.{i // 250}.{i % 250}.0/24", f"fd10:{i:x}::/64"]
    if i % 5 == 0:
        allowed.append(f"172.16.{i // 256}.{i % 256}/32")
    return _peer(
        random_key(),
        allowed,
        psk=random_key() if i % 2 else None,
        endpoint=endpoint if i % 3 != 2 else None,
        keepalive=25 if i % 4 == 0 else 0,
    )


def _big_allowed(start: int, count: int) -> list[str]:
    """``count`` allowed IPs alternating v4 /32 and v6 /128, numbered from ``start``."""
    out = []
    for n in range(start, start + count):
        out.append(f"198.18.{n // 256}.{n % 256}/32" if n % 2 == 0 else f"2001:db8:300::{n:x}/128")
    return out


def _huge_allowed(start: int, count: int) -> list[str]:
    """``count`` v4 /32s in 198.19.0.0/16: more than one netlink message holds (about 34 KB)."""
    return [f"198.19.{n // 256}.{n % 256}/32" for n in range(start, start + count)]


def make_versions(private_r: str, public_s: str, psk_live: str) -> dict:
    """Version A (the full one) and C (A with peers removed, changed, added; fwmark changed)."""
    live = _peer(public_s, [f"{S_ADDR}/32"], psk=psk_live, endpoint=f"192.0.2.2:{PORT}")
    big = _peer(
        random_key(), _big_allowed(0, 300), psk=random_key(), endpoint="[2001:db8::300]:3000", keepalive=25
    )
    huge = _peer(random_key(), _huge_allowed(0, 1000), endpoint="203.0.113.200:4000")
    generated = [_generated(i) for i in range(GENERATED)]
    disabled = _peer(random_key(), ["10.250.0.0/24"], disabled=True)
    a_peers = [live, big, huge, *generated, disabled]
    a = {"private": private_r, "port": PORT, "fwmark": 0x42, "peers": a_peers}

    c_generated = []
    for i, p in enumerate(generated):
        if i in REMOVED:
            continue
        p = dict(p)
        if i in CHANGED:
            kind = i % 5
            if kind == 0:
                p["psk"] = random_key()  # set or changed
            elif kind == 1:
                # cleared where there was one (the all-zero key must go out), else set
                p["psk"] = None if p["psk"] else random_key()
            elif kind == 2:
                p["endpoint"] = f"[2001:db8:c::{i:x}]:{2000 + i}"
            elif kind == 3:
                p["keepalive"] = 0 if p["keepalive"] else 7
            else:
                # a replaced list; some take over an address of a removed peer
                p["allowed"] = [f"10.{i // 250}.{i % 250}.128/25", f"fd11:{i:x}::/64"]
                if i - 20 in REMOVED:
                    p["allowed"].append(f"10.0.{i - 20}.0/24")
        c_generated.append(p)
    big_c = dict(big, allowed=_big_allowed(100, 300))  # 100 dropped, 100 new, 200 kept
    huge_c = dict(huge, allowed=_huge_allowed(300, 800))  # 300 dropped, 100 new, 700 kept
    added = [_generated(1000 + j) for j in range(ADDED)]
    c = {
        "private": private_r,
        "port": PORT,
        "fwmark": 0x43,
        "peers": [live, big_c, huge_c, *c_generated, disabled, *added],
    }
    return {"A": a, "C": c}


def to_loaded(spec: dict, version: int) -> Any:
    """A restore.Loaded holding ``spec`` as the one interface wgR."""
    from wgsyncd import restore
    from wgsyncd.state import Interface, Peer, Secret

    iface = Interface(
        name=IFACE, private_key=Secret(spec["private"]), listen_port=spec["port"], fwmark=spec["fwmark"]
    )
    for p in spec["peers"]:
        iface.peers[p["public"]] = Peer(
            p["public"],
            preshared_key=Secret(p["psk"]) if p["psk"] else None,
            allowed_ips=tuple(p["allowed"]),
            endpoint=p["endpoint"],
            persistent_keepalive=p["keepalive"],
            disabled=p["disabled"],
        )
    return restore.Loaded("vm-host", version, datetime.now(UTC), {IFACE: iface})


# ---------------------------------------------------------------- expected dumps


def _net(text: str) -> str:
    """An allowed IP as the kernel prints it (masked, inet_ntop form)."""
    return str(ipaddress.ip_network(text, strict=False))


def expected_lines(spec: dict, public: str) -> tuple[str, dict[str, str]]:
    """`wg show wgR dump` for ``spec``: the interface line and each running peer's line.

    Peer lines leave handshake and counters out (they are live values); everything
    else, allowed-IP order included, is what the kernel must print.
    """
    fwmark = f"0x{spec['fwmark']:x}" if spec["fwmark"] else "off"
    head = f"{spec['private']}\t{public}\t{spec['port']}\t{fwmark}"
    peers = {}
    for p in spec["peers"]:
        if p["disabled"]:
            continue
        allowed = ",".join(_net(a) for a in p["allowed"]) or "(none)"
        keepalive = str(p["keepalive"]) if p["keepalive"] else "off"
        cols = [p["public"], p["psk"] or "(none)", p["endpoint"] or "(none)", allowed, keepalive]
        peers[p["public"]] = "\t".join(cols)
    return head, peers


def actual_lines(text: str) -> tuple[str, dict[str, str], dict[str, tuple[int, int, int]]]:
    """The dump split like :func:`expected_lines`, plus each peer's (handshake, rx, tx)."""
    lines = [line for line in text.splitlines() if line.strip()]
    peers, live = {}, {}
    for line in lines[1:]:
        cols = line.split("\t")
        peers[cols[0]] = "\t".join([*cols[:4], cols[7]])
        live[cols[0]] = (int(cols[4]), int(cols[5]), int(cols[6]))
    return (lines[0] if lines else ""), peers, live


def _secret_free(text: str, spec: dict) -> str:
    """A dump line for a message: every key value of the version replaced by a placeholder."""
    for p in spec["peers"]:
        if p["psk"]:
            text = text.replace(p["psk"], "<psk>")
    return text.replace(spec["private"], "<private>")


def compare_dump(spec: dict, public: str, text: str, order: list[str] | None = None) -> list[str]:
    """Every difference between the dump and the version; names peers and columns, never keys."""
    want_head, want = expected_lines(spec, public)
    head, got, _live = actual_lines(text)
    diffs = []
    if head != want_head:
        diffs.append(
            f"interface line: got {_secret_free(head, spec)!r} want {_secret_free(want_head, spec)!r}"
        )
    missing, extra = [k for k in want if k not in got], [k for k in got if k not in want]
    if missing or extra:
        diffs.append(f"peers: {len(missing)} missing {missing[:3]}, {len(extra)} extra {extra[:3]}")
    names = ("public", "psk", "endpoint", "allowed_ips", "keepalive")
    for key, line in want.items():
        if key in got and got[key] != line:
            g, w = got[key].split("\t"), line.split("\t")
            cols = [i for i in range(len(names)) if i >= len(g) or g[i] != w[i]]
            shown = [
                f"{names[i]}: got {g[i][:120]!r} want {w[i][:120]!r}"
                for i in cols
                if i not in (1,) and i < len(g)
            ]
            diffs.append(
                f"peer {key}: {', '.join(names[i] for i in cols)} differ {'; '.join(shown)}".rstrip()
            )
    if order is not None and not diffs and list(got) != order:
        first = next(i for i, (a, b) in enumerate(zip(list(got), order, strict=False)) if a != b)
        diffs.append(f"peer order differs from the expected kernel order from position {first}")
    return diffs


# ---------------------------------------------------------------- setup (root namespace)


def cmd_setup() -> int:
    """Namespaces nsR/nsS over veth, the far end wgS, and versions A and C; one result."""

    def build() -> tuple[bool, str, dict]:
        STATE_DIR.mkdir(mode=0o700, exist_ok=True)
        sh(IP, "netns", "add", NS_R)
        sh(IP, "netns", "add", NS_S)
        sh(IP, "link", "add", "vR", "netns", NS_R, "type", "veth", "peer", "name", "vS", "netns", NS_S)
        for ns, dev, addr in ((NS_R, "vR", "192.0.2.1/24"), (NS_S, "vS", "192.0.2.2/24")):
            sh(IP, "-n", ns, "addr", "add", addr, "dev", dev)
            sh(IP, "-n", ns, "link", "set", dev, "up")
            sh(IP, "-n", ns, "link", "set", "lo", "up")
        private_r, private_s, psk = random_key(private=True), random_key(private=True), random_key()
        public_r = sh(WG, "pubkey", stdin=private_r).strip()
        public_s = sh(WG, "pubkey", stdin=private_s).strip()
        conf = STATE_DIR / f"{FAR}.conf"
        conf.write_text(
            f"[Interface]\nPrivateKey = {private_s}\nListenPort = {PORT}\n\n[Peer]\nPublicKey = {public_r}\n"
            f"PresharedKey = {psk}\nAllowedIPs = {R_ADDR}/32\nEndpoint = 192.0.2.1:{PORT}\n"
        )
        sh(IP, "-n", NS_S, "link", "add", FAR, "type", "wireguard")
        sh(IP, "netns", "exec", NS_S, WG, "setconf", FAR, str(conf))
        sh(IP, "-n", NS_S, "addr", "add", f"{S_ADDR}/24", "dev", FAR)
        sh(IP, "-n", NS_S, "link", "set", FAR, "up")
        versions = make_versions(private_r, public_s, psk)
        versions["public_r"] = public_r
        VERSIONS_FILE.write_text(json.dumps(versions))
        running = sum(1 for p in versions["A"]["peers"] if not p["disabled"])
        return True, f"nsR/nsS, wgS up; version A has {running} running peers", {"peers": running}

    run_check(cases.RESTORE_SETUP_ID, build)
    return 0


# ---------------------------------------------------------------- run (inside nsR)


def wipe() -> None:
    """Delete wgR (if there) and create it empty, with its tunnel address, up."""
    if Path(f"/sys/class/net/{IFACE}").exists():
        sh(IP, "link", "del", IFACE)
    sh(IP, "link", "add", IFACE, "type", "wireguard")
    sh(IP, "addr", "add", f"{R_ADDR}/24", "dev", IFACE)
    sh(IP, "link", "set", IFACE, "up")


def dump() -> str:
    """`wg show wgR dump` (the reference, independent of both backends' Python)."""
    return sh(WG, "show", IFACE, "dump")


def live_values(public_s: str) -> tuple[int, int, int]:
    """(handshake, rx, tx) of the live peer from the dump."""
    return actual_lines(dump())[2].get(public_s, (0, 0, 0))


def ping_once(addr: str, timeout: float) -> None:
    """Ping through the tunnel until a reply comes back, within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            subprocess.run(["ping", "-c", "1", "-W", "2", addr], capture_output=True, check=False).returncode
            == 0
        ):
            return
    raise CommandError(f"no ping reply from {addr} through {IFACE} within {timeout:.0f}s")


def session_kept(before: tuple[int, int, int], after: tuple[int, int, int]) -> list[str]:
    """The live peer's handshake time unchanged and its counters not reset (they may only grow)."""
    problems = []
    if after[0] != before[0]:
        problems.append(f"live peer handshake time changed {before[0]} -> {after[0]} (peer re-created?)")
    if after[1] < before[1] or after[2] < before[2]:
        problems.append(
            f"live peer counters reset: rx {before[1]} -> {after[1]}, tx {before[2]} -> {after[2]}"
        )
    return problems


class Run:
    """One backend's sequence on wgR; each step emits one result and may depend on the last."""

    def __init__(self, backend: str, label: str) -> None:
        from wgsyncd import restore

        self.restore = restore
        self.backend = backend
        self.bid = cases.restore_backend_id(backend, label)
        self.versions = json.loads(VERSIONS_FILE.read_text())
        self.public_r = self.versions["public_r"]
        self.public_s = self.versions["A"]["peers"][0]["public"]
        self.ok_so_far = True
        self.live: tuple[int, int, int] = (0, 0, 0)
        self.live_at = 0.0

    def apply(self, version: str, dry_run: bool = False) -> Any:
        """restore.apply of version A or C with this run's backend; the one interface's changes."""
        loaded = to_loaded(self.versions[version], 1 if version == "A" else 3)
        (changes,) = self.restore.apply(
            loaded, socket_dir="/run/wireguard", wg_command=WG, via=self.backend, dry_run=dry_run
        )
        return changes

    def _counts(self, changes: Any) -> dict[str, int]:
        """Changes by action."""
        return {a: sum(1 for p in changes.peers if p.action == a) for a in ("add", "update", "remove")}

    def step(self, check: str, fn: Any) -> None:
        """Run one step as a result; after a failed step the later ones say so instead of running."""
        rid = cases.restore_id(check, self.bid)
        if not self.ok_so_far:
            run_check(rid, lambda: (False, "an earlier restore step of this backend failed", {}))
            return
        self.ok_so_far = bool(run_check(rid, fn))

    def wiped(self) -> tuple[bool, str, dict]:
        """Apply A onto an empty wgR: every peer added, device set, dump exactly A's."""
        wipe()
        t = time.monotonic()
        changes = self.apply("A")
        secs = time.monotonic() - t
        problems = []
        if changes.backend != self.backend:
            problems.append(f"backend {changes.backend}, asked for {self.backend}")
        counts = self._counts(changes)
        if counts != {"add": 300, "update": 0, "remove": 0}:
            problems.append(f"changes {counts}, want 300 adds")
        if sorted(changes.device) != ["fwmark", "listen_port", "private_key"]:
            problems.append(f"device changes {changes.device}")
        order = [p["public"] for p in self.versions["A"]["peers"] if not p["disabled"]]
        problems += compare_dump(self.versions["A"], self.public_r, dump(), order)
        metrics: dict[str, Any] = {"apply_s": round(secs, 2), "peers": 300}
        if self.backend == "netlink":
            problems += self.split_huge_peer("A", changes, metrics)
        detail = "; ".join(problems[:20]) or f"{changes.summary()}, dump equals version A"
        return not problems, detail, metrics

    def split_huge_peer(self, version: str, changes: Any, metrics: dict) -> list[str]:
        """Proof that the 1,000-IP peer went out over several messages (REPLACE, then UPDATE_ONLY)."""
        loaded = to_loaded(self.versions[version], 0)
        desired = self.restore.with_resolved_endpoints(loaded.interfaces[IFACE], "check")
        messages = self.restore.netlink_messages(desired, changes, "check")
        huge = self.versions[version]["peers"][2]["public"]
        flags = [
            dict(peer["attrs"])["WGPEER_A_FLAGS"]
            for attrs in messages
            for key, peers in attrs
            if key == "WGDEVICE_A_PEERS"
            for peer in peers
            if dict(peer["attrs"])["WGPEER_A_PUBLIC_KEY"] == huge
        ]
        metrics.update(netlink_messages=len(messages), huge_peer_parts=len(flags))
        want = [self.restore.WGPEER_F_REPLACE_ALLOWEDIPS] + [self.restore.WGPEER_F_UPDATE_ONLY] * (
            len(flags) - 1
        )
        if len(flags) < 2 or flags != want:
            return [f"the 1,000-IP peer went out in {len(flags)} parts with flags {flags}, want >= 2: {want}"]
        return []

    def again(self) -> tuple[bool, str, dict]:
        """Handshake with wgS, then apply A again: nothing to do, the session untouched."""
        ping_once(S_ADDR, HANDSHAKE_TIMEOUT)
        wait_for_handshake(IFACE, HANDSHAKE_TIMEOUT)
        self.live = live_values(self.public_s)
        self.live_at = time.monotonic()
        before = dump()
        t = time.monotonic()
        changes = self.apply("A")
        secs = time.monotonic() - t
        after = dump()
        problems = [] if changes.empty else [f"apply again changed something: {changes.summary()}"]
        problems += compare_dump(self.versions["A"], self.public_r, after)
        if actual_lines(before)[:2] != actual_lines(after)[:2]:
            problems.append("the dump changed")
        problems += session_kept(self.live, live_values(self.public_s))
        if not all(self.live):
            problems.append(f"live peer without handshake/counters: {self.live}")
        detail = (
            "; ".join(problems) or f"no change; live peer handshake {self.live[0]} rx {self.live[1]} kept"
        )
        return not problems, detail, {"apply_s": round(secs, 2)}

    def changed(self) -> tuple[bool, str, dict]:
        """Dry run of C writes nothing; applying C gives exactly C's dump, the session survives."""
        before = dump()
        dry = self.apply("C", dry_run=True)
        problems = (
            [] if actual_lines(dump())[:2] == actual_lines(before)[:2] else ["dry run changed the dump"]
        )
        t = time.monotonic()
        changes = self.apply("C")
        secs = time.monotonic() - t
        counts = self._counts(changes)
        want = {"add": ADDED, "update": len(CHANGED) + 2, "remove": len(REMOVED)}
        if counts != want or self._counts(dry) != want:
            problems.append(f"changes {counts} (dry run {self._counts(dry)}), want {want}")
        if changes.device != ("fwmark",):
            problems.append(f"device changes {changes.device}, want fwmark only")
        metrics: dict[str, Any] = {"apply_s": round(secs, 2)}
        if self.backend == "netlink":
            problems += self.split_huge_peer("C", changes, metrics)
        running_c = [p["public"] for p in self.versions["C"]["peers"] if not p["disabled"]]
        # the kernel keeps existing peers where they are and appends new ones in order
        kept = [k for k in actual_lines(before)[1] if k in running_c]
        order = kept + [k for k in running_c if k not in kept]
        problems += compare_dump(self.versions["C"], self.public_r, dump(), order)
        problems += session_kept(self.live, live_values(self.public_s))
        ping_once(S_ADDR, HANDSHAKE_TIMEOUT)  # the kept session still carries traffic
        if time.monotonic() - self.live_at < REKEY_AFTER:
            problems += session_kept(self.live, live_values(self.public_s))
        detail = "; ".join(problems[:20]) or f"{changes.summary()}, dump equals version C, live session kept"
        return not problems, detail, metrics


def backend_choice(label: str) -> tuple[bool, str, dict]:
    """auto: `wg syncconf` when wg exists, netlink when it does not; netlink refuses a non-WireGuard link."""
    from wgsyncd import restore

    versions = json.loads(VERSIONS_FILE.read_text())
    loaded = to_loaded(versions["C"], 3)
    problems = []
    got = {}
    for wg in (WG, "/nonexistent/wg"):
        (ch,) = restore.apply(loaded, wg_command=wg, via="auto", dry_run=True)
        got[wg] = ch.backend
    if got != {WG: "wg", "/nonexistent/wg": "netlink"}:
        problems.append(f"auto chose {got}")
    sh(IP, "link", "add", "dummyR", "type", "veth", "peer", "name", "dummyR2")
    try:
        veth = dataclasses.replace(loaded.interfaces[IFACE], name="dummyR")  # same config, other link
        other = restore.Loaded("vm-host", 9, datetime.now(UTC), {"dummyR": veth})
        restore.apply(other, via="netlink", dry_run=True)
        problems.append("via=netlink accepted a veth link")
    except restore.RestoreError as exc:
        if "not a kernel WireGuard link" not in str(exc):
            problems.append(f"unexpected refusal: {exc}")
    finally:
        sh(IP, "link", "del", "dummyR")
    return not problems, "; ".join(problems) or f"auto -> {got}; netlink refuses a veth", {}


def cmd_run(backend: str, label: str) -> int:
    """The three steps for one backend (inside nsR), then the backend choice check for netlink."""
    log(f"restore {backend} {label}: pyroute2 on path: {any('pyroute2' in p for p in sys.path)}")
    run = Run(backend, label)
    run.step("restore_apply_wiped", run.wiped)
    run.step("restore_apply_again_is_noop", run.again)
    run.step("restore_apply_changes", run.changed)
    if backend == "netlink":
        run_check(cases.label_id("restore_backend_choice", label), lambda: backend_choice(label))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Dispatch setup / run."""
    parser = argparse.ArgumentParser(prog="kernel_vm.restore_vm")
    parser.add_argument("command", choices=("setup", "run"))
    parser.add_argument("--backend", choices=("wg", "netlink"), default="wg")
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    if args.command == "setup":
        return cmd_setup()
    return cmd_run(args.backend, args.label)


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
