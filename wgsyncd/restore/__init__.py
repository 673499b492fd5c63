"""Restore: one config version from the database -> conf files, running interfaces, or wgrest.

The only room that writes a host. Everything that can refuse is checked before
anything is written: the host and version exist, the recovery key is the one the
secrets were sealed to (compared by public key fingerprint BEFORE any blob is
opened), every blob opens and hashes to what the version recorded, every target
interface or wgrest device exists. Only then do the targets change, and each target
changes in the gentlest way it can:

- ``to_dir``: conf files byte for byte from the sealed raw text (rendered in
  wg-quick format when there is none), each written to a temp file, fsynced and
  renamed over the old one, mode 0600, the old one kept as a backup (hard link);
- ``apply``: like ``wg syncconf``: only peers and device fields that differ are
  touched, so unchanged peers keep their sessions. wireguard-go and other userspace
  implementations through their control socket (``set=1``); kernel interfaces
  through ``wg syncconf`` when the ``wg`` binary exists, else through netlink with
  pyroute2 (``--apply-via netlink`` forces it). The netlink messages are built here
  with the kernel's own flag bits, not with ``WireGuard.set()``, whose peer flags
  differ between pyroute2 versions (Debian 12 ships 0.7.2); the interface is read
  back after the write and must then run the version;
- ``to_wgrest``: POST missing peers, PATCH changed ones, DELETE extra ones.

Secrets stay in :class:`~wgsyncd.state.Secret` until the moment they are written
out; messages name host, version, interface, file or URL, never a key. A dry-run diff
shows keys as fingerprints.

One concern per module; this package re-exports the API so callers keep writing
``from wgsyncd import restore; restore.load(...)``:

- :mod:`.errors`: RestoreError;
- :mod:`.loading`: version choice, recovery key, unsealing, the desired Interface;
- :mod:`.render`: conf / setconf / syncconf text, redaction of key lines;
- :mod:`.files`: ``to_dir``;
- :mod:`.changes`: the running-vs-version diff shared by the backends;
- :mod:`.running`: ``apply``: backend choice, control socket, ``wg syncconf``;
- :mod:`.netlink`: the netlink writer (hand-built messages, read-back);
- :mod:`.wgrest`: ``to_wgrest`` and ``read_token``;
- :mod:`.targets`: the ordering rules: every target checked before the first write;
- :mod:`.report`: ``history``, ``unsealed_warning``, ``as_json``, ``restore_text``.

The database (psycopg), sealing (PyNaCl), pyroute2 and requests are imported where
they are used: to_dir/apply/render work from a Loaded alone, e.g. inside the kernel
test VM.
"""

from __future__ import annotations

from wgsyncd.canonical import ZERO_KEY_B64, ZERO_KEY_HEX
from wgsyncd.restore.changes import (
    InterfaceChanges,
    PeerChange,
    diff_interface,
    networks,
    resolve_endpoint,
    secret_fp,
    with_resolved_endpoints,
    write_order,
)
from wgsyncd.restore.errors import RestoreError
from wgsyncd.restore.files import DEFAULT_DIR, FileChange, conf_file_text, to_dir
from wgsyncd.restore.loading import Loaded, desired_interface, load, parse_time, running_peers
from wgsyncd.restore.netlink import (
    NETLINK_MESSAGE_BUDGET,
    NETLINK_TIMEOUT,
    WG_CMD_SET_DEVICE,
    WG_GENL_VERSION,
    WGPEER_F_REMOVE_ME,
    WGPEER_F_REPLACE_ALLOWEDIPS,
    WGPEER_F_UPDATE_ONLY,
    netlink_messages,
)
from wgsyncd.restore.render import (
    redact_conf_line,
    render_conf,
    render_setconf,
    render_syncconf,
)
from wgsyncd.restore.report import as_json, history, restore_text, unsealed_warning
from wgsyncd.restore.running import (
    UAPI_TIMEOUT,
    WG_TIMEOUT,
    _find_target,
    apply,
    is_kernel_link,
    uapi_set_request,
)
from wgsyncd.restore.targets import Targets, outcome, run
from wgsyncd.restore.wgrest import HTTP_TIMEOUT, WgrestChanges, read_token, to_wgrest

_fp = secret_fp  # the name restore.py had before the split (tests use it)

__all__ = [
    "DEFAULT_DIR",
    "HTTP_TIMEOUT",
    "NETLINK_MESSAGE_BUDGET",
    "NETLINK_TIMEOUT",
    "UAPI_TIMEOUT",
    "WGPEER_F_REMOVE_ME",
    "WGPEER_F_REPLACE_ALLOWEDIPS",
    "WGPEER_F_UPDATE_ONLY",
    "WG_CMD_SET_DEVICE",
    "WG_GENL_VERSION",
    "WG_TIMEOUT",
    "ZERO_KEY_B64",
    "ZERO_KEY_HEX",
    "FileChange",
    "InterfaceChanges",
    "Loaded",
    "PeerChange",
    "RestoreError",
    "Targets",
    "WgrestChanges",
    "_find_target",  # private, used by tests/test_restore.py
    "_fp",  # old private name of secret_fp, used by tests/test_restore.py
    "apply",
    "as_json",
    "conf_file_text",
    "desired_interface",
    "diff_interface",
    "history",
    "is_kernel_link",
    "load",
    "netlink_messages",
    "networks",
    "outcome",
    "parse_time",
    "read_token",
    "redact_conf_line",
    "render_conf",
    "render_setconf",
    "render_syncconf",
    "resolve_endpoint",
    "restore_text",
    "run",
    "running_peers",
    "secret_fp",
    "to_dir",
    "to_wgrest",
    "uapi_set_request",
    "unsealed_warning",
    "with_resolved_endpoints",
    "write_order",
]
