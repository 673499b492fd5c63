"""Test bed: three hosts written through the real store, shaped so each fleet question has answers.

Built on the roles bed (tests/beds/roles.py: an owned database, host roles A and B, an
operator and a reader) plus a third bound host C. Every host writes its own rows as
its own role through ``store.write_cycle``; afterwards the owner moves timestamps back
(time cannot pass in a test): C's ok cycles an hour and more ago with a failed cycle
since (it stopped syncing), and one peer's traffic three days back (``top --since``).

What is in it, and so what each question must answer:

- A wg0: alice (10.1.0.2/32, handshake 1 h ago), phone (key shared with B), sitenet
  (10.9.0.0/24, handshake 30 days ago), fresh (never a handshake), off (disabled,
  10.9.0.7/32: overlaps, but disabled peers are no conflict and not stale)
- A wg1: alice again (same key as wg0's alice: a same-host duplicate), wide
  (10.2.0.0/16, containing alice's 10.2.0.2/32 on the same interface)
- B wg0: laptop (10.9.0.7/32 inside A's 10.9.0.0/24: a cross-host overlap; handshake
  3 days ago, traffic 3 days ago), phone (A's phone key: a cross-host duplicate,
  never a handshake), v6 (fd00::2/128), junk (allowed IPs: text that is no address,
  which the views must skip, and 10.30.0.9/32 inside C's gw) and a peer whose name
  holds terminal escapes and a newline (HOSTILE_NAME)
- C wg0: gw (10.30.0.0/24); C's last ok cycle is over an hour old: stopped
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.beds.postgres import fake_key
from tests.beds.roles import Fleet, sync
from wgsyncd import signing, store
from wgsyncd.restore import trust
from wgsyncd.state import HostState, Interface, Peer, Source
from wgsyncd.store import roles, signed

SEEN = (Source.KERNEL, Source.CONF)
# a peer name a compromised host stores: a terminal title escape, a colour, a forged line
HOSTILE_NAME = "x\x1b]0;pwned\x07\x1b[31m\nhost_id=forged"
HOUR = timedelta(hours=1)


@dataclass
class World:
    """The fleet bed with the data above; ``key(name)`` is the public key of a named peer."""

    fleet: Fleet
    host_c: str
    role_c: str
    now: datetime
    keys: dict[str, str] = field(default_factory=dict)

    def key(self, name: str) -> str:
        """The public key of the peer called ``name`` (A's and B's phone share one)."""
        return self.keys[name]


def key(name: str) -> str:
    """A deterministic public key per peer name."""
    return fake_key("fleet-world", name)


def peer(name: str, ips: tuple[str, ...], hs: datetime | None, rx: int, tx: int, **kw: Any) -> Peer:
    """A peer as the merge makes it: kernel counters and handshake, conf name and allowed IPs."""
    return Peer(
        public_key=kw.pop("public_key", key(name)),
        allowed_ips=ips,
        name=name,
        latest_handshake=hs,
        rx_bytes=rx,
        tx_bytes=tx,
        disabled=kw.pop("disabled", False),
        provenance={"allowed_ips": Source.CONF, "rx_bytes": Source.KERNEL},
        seen_by=SEEN,
        **kw,
    )


def interface(host: str, name: str, peers: list[Peer]) -> Interface:
    """An interface with its own key and the given peers."""
    return Interface(
        name=name,
        public_key=fake_key("fleet-world", host, name),
        listen_port=51820,
        addresses=("10.255.0.1/24",),
        conf_path=f"/etc/wireguard/{name}.conf",
        implementation="userspace",
        peers={p.public_key: p for p in peers},
        seen_by=SEEN,
    )


def state(host_id: str, when: datetime, ifaces: list[Interface]) -> HostState:
    """A complete read of every source at ``when``."""
    s = HostState(host_id=host_id, hostname=f"vpn-{host_id[5]}", collected_at=when)
    s.sources = {Source.KERNEL: True, Source.CONF: True}
    s.interfaces = {i.name: i for i in ifaces}
    return s


def host_a(host_id: str, now: datetime, grown: int) -> HostState:
    """Host A; ``grown`` bytes are added to alice's counters (her traffic)."""
    return state(
        host_id,
        now,
        [
            interface(
                host_id,
                "wg0",
                [
                    peer("alice", ("10.1.0.2/32",), now - HOUR, 1000 + grown, 2000 + grown // 50),
                    peer("phone", ("10.1.0.3/32",), now - 2 * HOUR, 300, 400),
                    peer("sitenet", ("10.9.0.0/24",), now - 30 * 24 * HOUR, 50, 60),
                    peer("fresh", ("10.1.0.4/32",), None, 0, 0),
                    peer("off", ("10.9.0.7/32",), None, 0, 0, disabled=True),
                ],
            ),
            interface(
                host_id,
                "wg1",
                [
                    peer("alice-wg1", ("10.2.0.2/32",), now - HOUR, 10, 10, public_key=key("alice")),
                    peer("wide", ("10.2.0.0/16",), now - HOUR, 20, 20),
                ],
            ),
        ],
    )


def host_b(host_id: str, now: datetime) -> HostState:
    """Host B, with a cross-host duplicate key, a cross-host overlap and one unparsable allowed IP."""
    peers = [
        peer("laptop", ("10.9.0.7/32",), now - 3 * 24 * HOUR, 7000, 9000),
        peer("phone-b", ("10.20.0.3/32",), None, 0, 0, public_key=key("phone")),
        peer("v6", ("fd00::2/128",), now - HOUR, 100, 100),
        peer("junk", ("not-an-address", "10.30.0.9/32"), now - HOUR, 1, 1),
        peer(HOSTILE_NAME, ("10.50.0.1/32",), now - HOUR, 1, 1, public_key=key("hostile")),
    ]
    return state(host_id, now, [interface(host_id, "wg0", peers)])


def host_c(host_id: str, now: datetime) -> HostState:
    """Host C: one gateway peer."""
    return state(host_id, now, [interface(host_id, "wg0", [peer("gw", ("10.30.0.0/24",), now, 5, 5)])])


def _bind_host_c(f: Fleet) -> tuple[str, str]:
    """A third bound host, as `wgsyncd db add-host` makes it, its signing key pinned."""
    sfx = uuid.uuid4().hex[:8]
    host, role = f"host-c-{sfx}", f"wgs_c_{sfx}"
    with f.connect(f.owner) as conn:
        roles.add_host(conn, host, role)
        verify = signing.load_or_create(f.state_dir(host)).verify_key
        assert signed.pin_signing_key(conn, host, verify)
        trust.add_pin(f.trusted_keys, host, verify)
    return host, role


def _retime(f: Fleet, host_id: str, starts: list[datetime]) -> None:
    """The owner moves the host's cycles to ``starts`` (oldest first): time passing, made instant."""
    with psycopg.connect(f.dsn(f.owner), autocommit=True) as c:
        ids = [
            r[0] for r in c.execute("SELECT id FROM sync_status WHERE host_id = %s ORDER BY id", (host_id,))
        ]
        assert len(ids) == len(starts), (host_id, ids)
        for i, at in zip(ids, starts, strict=True):
            c.execute(
                "UPDATE sync_status SET started_at = %s, finished_at = %s + interval '1 second' "
                "WHERE host_id = %s AND id = %s",
                (at, at, host_id, i),
            )


@pytest.fixture
def world(fleet: Fleet) -> World:
    """A, B and C synced through their own roles; C stopped an hour ago; B's laptop talked 3 days ago."""
    now = datetime.now(UTC).replace(microsecond=0)
    host_c_id, role_c = _bind_host_c(fleet)
    w = World(
        fleet, host_c_id, role_c, now, {n: key(n) for n in ("alice", "phone", "sitenet", "laptop", "gw")}
    )
    with fleet.connect(fleet.role_a) as conn:
        sync(conn, host_a(fleet.host_a, now - timedelta(minutes=10), 0), fleet)
        sync(conn, host_a(fleet.host_a, now, 50_000), fleet)
    with fleet.connect(fleet.role_b) as conn:
        sync(conn, host_b(fleet.host_b, now), fleet)
    with fleet.connect(role_c) as conn:
        for _ in range(3):
            sync(conn, host_c(host_c_id, now - 2 * HOUR), fleet)
        store.record_failure(conn, host_c_id, uuid.uuid4(), now, "database: connect failed", "test")
    # A: one cycle 10 minutes ago and one now (interval 600 s); B: one cycle now (interval
    # not measured: 300 s); C: ok every minute two hours ago, then a failure now (median 60 s)
    _retime(fleet, fleet.host_a, [now - timedelta(minutes=10), now])
    _retime(fleet, fleet.host_b, [now])
    _retime(fleet, host_c_id, [now - 2 * HOUR - timedelta(minutes=2 - i) for i in range(3)] + [now])
    with psycopg.connect(fleet.dsn(fleet.owner), autocommit=True) as c:
        c.execute(
            "UPDATE peer_traffic SET observed_at = observed_at - interval '3 days' "
            "WHERE host_id = %s AND public_key = %s",
            (fleet.host_b, key("laptop")),
        )
    return w
