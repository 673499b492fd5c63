"""This host's identity: the default host_id and the machine fingerprint, from the machine-id.

Both are app-specific ids (what ``systemd-id128 machine-id --app-specific=`` prints),
so neither reveals the machine-id itself, as machine-id(5) asks; the fingerprint
lets the store tell a host from a clone that shares its host_id.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import uuid
from pathlib import Path

MACHINE_ID_PATHS = ("/etc/machine-id", "/var/lib/dbus/machine-id")
# wgsyncd's application ids (random, fixed forever): the default host_id is
# `systemd-id128 machine-id --app-specific=55b68314b0ea4dc88ed18bf06863c658`, and the
# machine fingerprint the same with the second id, so neither reveals the machine-id
# (machine-id(5)) and the fingerprint cannot be computed from the host_id
HOST_ID_APP_ID = uuid.UUID("55b68314b0ea4dc88ed18bf06863c658")
FINGERPRINT_APP_ID = uuid.UUID("de0db7685b2745fca767214783b3dac5")


def machine_id() -> str | None:
    """/etc/machine-id (32 hex digits), or None when the machine has none."""
    for path in MACHINE_ID_PATHS:
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if len(value) == 32:
            try:
                int(value, 16)
            except ValueError:
                continue
            return value.lower()
    return None


def app_specific_id(machine: str, app_id: uuid.UUID) -> str:
    """sd_id128_get_machine_app_specific(): HMAC-SHA256 keyed by the machine id's 16 bytes
    over the app id's 16 bytes, the first 16 bytes made a v4 UUID, as 32 hex digits.

    Stable per machine and application, unique like the machine-id, and without
    revealing it: what machine-id(5) asks of anything that exposes an id.
    """
    digest = bytearray(hmac.new(bytes.fromhex(machine), app_id.bytes, hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x40
    digest[8] = (digest[8] & 0x3F) | 0x80
    return digest.hex()


def default_host_id() -> str:
    """The wgsyncd-specific id derived from the machine-id (the FQDN without one).

    wgsyncd 0.1 used the raw machine-id; an upgraded host keeps its history by
    setting ``host_id`` to that value in wgsyncd.toml (README, "Upgrading").
    """
    machine = machine_id()
    return app_specific_id(machine, HOST_ID_APP_ID) if machine else socket.getfqdn()


def machine_fingerprint() -> str | None:
    """This machine's fingerprint (another app-specific id): told apart from a clone's."""
    machine = machine_id()
    return app_specific_id(machine, FINGERPRINT_APP_ID) if machine else None
