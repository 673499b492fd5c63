"""Kernel WireGuard interfaces through netlink: the kernel source's ``netlink`` backend.

The protocol lives in :mod:`wgsyncd.wire.netlink` (numbers, the raw-socket dump) and
:mod:`wgsyncd.wire.netlink_dump` (the messages folded into one Interface); this module
is the reader's use of them: list the ``wireguard`` links, dump each one within the
configured timeout.
"""

from __future__ import annotations

from wgsyncd.state import Interface
from wgsyncd.wire.netlink import (  # noqa: F401  (re-exported: the backend's names)
    DUMP_RETRIES,
    NLM_F_DUMP_INTR,
    FamilyMissing,
    bounded,
    describe,
    dump_device,
    list_interfaces,
)
from wgsyncd.wire.netlink import nlas as _nlas  # noqa: F401  (tests decode messages with it)
from wgsyncd.wire.netlink_dump import coalesce, fold_dump  # noqa: F401


def read_interface(name: str, timeout: float) -> Interface:
    """Dump one kernel interface (retried when the kernel flags the dump interrupted) and fold it.

    Raises FamilyMissing when the kernel has no WireGuard, InterfaceReadError for
    anything that stops a complete read (the message never holds a key value).
    """
    return fold_dump(name, dump_device(name, timeout))
