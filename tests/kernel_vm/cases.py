"""Names shared by the VM job and the pytest side: which results must come back.

Imported both on the host (``tests.kernel_vm.cases``, to parametrize the tests at
collection time, before any VM boots) and inside the VM (``kernel_vm.cases``), so
it imports nothing but the stdlib. A result the host expects and the VM never
sent is a failure; a result the VM sent and the host does not expect is one too.
"""

from __future__ import annotations

RESULT_PREFIX = "WGSYNCD-RESULT "
DONE_PREFIX = "WGSYNCD-DONE "

# case -> the kernel interface it lives on (names <= 15 chars)
CASES: dict[str, str] = {
    "one_peer": "wgk1",
    "peers_1000": "wgk1k",
    "peers_10000": "wgk10k",
    "many_allowed_ips": "wgkmany",  # eight peers with 300 allowed IPs, one with 1,500
    "mixed_fields": "wgkmix",  # psk, v4/v6 endpoints, keepalive edge values, fwmark
    "bare_interface": "wgkbare",  # no key, no port, no peers
    "live_pair": "wgA",  # real handshake with wgB in namespace nsB over veth
}
# checks run once per case and per pyroute2 version
CASE_CHECKS = ("read_matches_dump", "read_matches_setup")
# checks run once per pyroute2 version
LABEL_CHECKS = (
    "full_read",  # read() of every interface: no errors, same names as `wg show all dump`
    "live_pair_far_end",  # wgB read from inside its namespace nsB
    "timing_10000_peers",  # netlink read time next to `wg show dump` time, same boot
    "read_during_churn",  # a dump racing peer changes: retried or an error, never half-read
    "write_add_peer",
    "write_update_allowed_ips",
    "write_remove_peer",
)


# restore --apply on a real kernel interface (kernel_vm.restore_vm): one setup, then per
# backend ("wg" once, "netlink-<label>" per pyroute2 version) these steps in order
RESTORE_SETUP_ID = "restore_setup"
RESTORE_CHECKS = (
    "restore_apply_wiped",  # wiped wgR + version A (300 peers) -> the dump is A's
    "restore_apply_again_is_noop",  # A again: no change, the live session keeps handshake/counters
    "restore_apply_changes",  # version C (removed/changed/added): exact dump, session kept
)
# checks run once per pyroute2 version by the restore job
RESTORE_LABEL_CHECKS = ("restore_backend_choice",)  # auto picks wg/netlink; netlink refuses a veth


def restore_backend_id(backend: str, label: str) -> str:
    """``wg`` (needs no pyroute2) or ``netlink-<label>``."""
    return backend if backend == "wg" else f"{backend}-{label}"


def restore_id(check: str, backend_id: str) -> str:
    """Id of one restore step for one backend, e.g. ``restore_apply_changes[netlink-debian]``."""
    return f"{check}[{backend_id}]"


def restore_ids(labels: list[str]) -> list[str]:
    """Every restore result id a complete run reports, in run order."""
    ids = [RESTORE_SETUP_ID]
    for bid in ["wg", *(restore_backend_id("netlink", label) for label in labels)]:
        ids += [restore_id(check, bid) for check in RESTORE_CHECKS]
        if bid != "wg":
            ids += [label_id(check, bid.removeprefix("netlink-")) for check in RESTORE_LABEL_CHECKS]
    return ids


def setup_id(case: str) -> str:
    """Id of the result that says whether a case's interface could be built."""
    return f"setup[{case}]"


def case_id(check: str, case: str, label: str) -> str:
    """Id of a per-case check for one pyroute2 version, e.g. ``read_matches_dump[peers_1000-debian]``."""
    return f"{check}[{case}-{label}]"


def label_id(check: str, label: str) -> str:
    """Id of a per-version check, e.g. ``write_add_peer[pypi]``."""
    return f"{check}[{label}]"


def expected_ids(labels: list[str]) -> list[str]:
    """Every result id a complete run reports, in run order (the reader's, then restore's)."""
    ids = [setup_id(case) for case in CASES]
    for label in labels:
        ids += [case_id(check, case, label) for case in CASES for check in CASE_CHECKS]
        ids += [label_id(check, label) for check in LABEL_CHECKS]
    return ids + restore_ids(labels)
