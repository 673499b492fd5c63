"""Which incarnation of an interface the counters were read from, so a restart is a reset.

WireGuard's rx/tx counters live and die with the interface (and with the peer
inside it). A restart that the next reading cannot see as "the counter went
down" -- because traffic since then already pushed it past the stored value --
would otherwise have the stored reading subtracted from a fresh counter.

What identifies an incarnation, and why these three:

- the ifindex: the kernel gives every new netdev a new index, and does not reuse
  one in a namespace until the counter wraps. `ip link del` + `add`, a
  wg-quick down/up, and a wireguard-go restart (a new TUN device) all change
  it. It is the same for kernel and userspace interfaces, read the same way
  (if_nametoindex), so it needs no source-specific code.
- the boot id: after a reboot ifindexes start again from 1, so wg0 often gets the
  same index every boot.
- the network namespace (inode of /proc/self/ns/net): a container restarted
  with a fresh namespace also numbers from 1.

Not used: the listen port and public key (a restart with a fixed port and key
keeps both, and a port change is a config change, not a restart); the
wireguard-go PID (only userspace interfaces have one, and only when its socket
is readable); a creation time (netlink has none for a link).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from pathlib import Path


def _host_part() -> str:
    """boot id + network namespace inode; "?" for what cannot be read (then only the ifindex counts)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = "?"
    try:
        netns = str(os.stat("/proc/self/ns/net").st_ino)
    except OSError:
        netns = "?"
    return f"{boot}:{netns}"


def identities(names: Iterable[str]) -> dict[str, str]:
    """name -> identity for every interface that exists in this namespace now."""
    host = _host_part()
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = f"{host}:{socket.if_nametoindex(name)}"
        except OSError:
            continue  # gone (or never here: a conf-only interface)
    return out


def stable(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    """Identities that did not change while the sources were read.

    An interface recreated during the read may have given counters of either
    incarnation; it gets no identity this cycle (the counters alone decide).
    """
    return {name: ident for name, ident in after.items() if before.get(name) == ident}
