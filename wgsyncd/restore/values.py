"""Every value of a loaded version checked before restore renders or sends any of it.

The database is shared and not trusted for what restore writes (ARCHITECTURE.md):
an interface name becomes a file name and a socket path, a value with a newline
becomes a new conf line (a PostUp). So each target (conf files, running interfaces,
wgrest) runs :func:`check_loaded` before its first write, and the renderers check
again (:func:`check_interface`) at the moment they build text: a bad value stops
restore with one line naming version, interface, peer and field, and nothing written.
"""

from __future__ import annotations

from wgsyncd import validate
from wgsyncd.restore.errors import RestoreError
from wgsyncd.restore.loading import Loaded
from wgsyncd.state import Interface


def check_interface(iface: Interface, where: str) -> None:
    """One interface and its peers, or a RestoreError ``<where>: ...: field: why``."""
    try:
        validate.whole_interface(iface, where)
    except validate.Invalid as exc:
        raise RestoreError(f"{exc}; refusing to restore it (nothing was changed)") from None


def check_loaded(loaded: Loaded) -> None:
    """Every interface of the version (the name it is filed under included)."""
    for name, iface in loaded.interfaces.items():
        where = f"{loaded.label}: interface {validate.shown(str(name))}"
        if name != iface.name:
            raise RestoreError(f"{where}: name: does not match the interface's own name; refusing")
        check_interface(iface, where)
