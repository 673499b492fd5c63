"""``wg show dump`` output: the text wireguard-tools prints, parsed into Interfaces.

One parser for everyone who runs ``wg``: the kernel source's ``wg`` backend (``wg
show all dump``), restore reading a running interface before it writes (``wg show
NAME dump``), and the tests, which use it as the reference every other backend must
equal. Tab-separated columns, ``(none)`` and ``off`` for unset values; a bad line is
an error naming its line number, never its content (it may hold a key).
"""

from __future__ import annotations

from wgsyncd.canonical import parse_port
from wgsyncd.state import Interface, Peer, StateError, parse_key
from wgsyncd.wire.values import make_interface, make_peer

NONE = "(none)"


class DumpParseError(ValueError):
    """A ``wg show dump`` line that cannot be understood; names the line number, not its content."""

    def __init__(self, message: str, interface: str | None) -> None:
        super().__init__(message)
        self.interface = interface


def _dump_key(text: str, where: str) -> str | None:
    """A dump key column: ``(none)`` -> None, else a validated base64 key."""
    return None if text == NONE else parse_key(text, where)


def _dump_interface(name: str, cols: list[str], where: str) -> Interface:
    """``private-key public-key listen-port fwmark`` -> Interface."""
    private, public, port, fwmark = cols
    return make_interface(
        name,
        _dump_key(private, f"{where}: private key"),
        _dump_key(public, f"{where}: public key"),
        parse_port(port),
        0 if fwmark == "off" else int(fwmark, 0),
        None,
    )


def _dump_peer(cols: list[str], where: str) -> Peer:
    """``public psk endpoint allowed-ips handshake rx tx keepalive`` -> Peer."""
    public, psk, endpoint, allowed, handshake, rx, tx, keepalive = cols
    return make_peer(
        parse_key(public, f"{where}: public key"),
        _dump_key(psk, f"{where}: preshared key"),
        () if allowed == NONE else tuple(allowed.split(",")),
        None if endpoint == NONE else endpoint,
        0 if keepalive == "off" else int(keepalive),
        int(handshake),
        int(rx),
        int(tx),
    )


def parse_dump(text: str, name: str | None) -> tuple[dict[str, Interface], dict[str, str]]:
    """Parse dump text into interfaces plus per-interface errors (bad interfaces are dropped).

    ``wg show all dump`` prefixes each line with the interface name (5 / 9 columns);
    ``wg show NAME dump`` does not (4 / 8 columns) and needs ``name``.
    """
    interfaces: dict[str, Interface] = {}
    errors: dict[str, str] = {}
    current: str | None = name
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) in (5, 9):
            current, cols = cols[0], cols[1:]
        elif len(cols) not in (4, 8) or name is None:
            errors.setdefault(current or "?", f"line {lineno}: unexpected number of columns ({len(cols)})")
            interfaces.pop(current or "?", None)  # never hand on a half-read interface
            continue
        if current in errors:
            continue
        where = f"line {lineno}"
        try:
            if len(cols) == 4:
                interfaces[current] = _dump_interface(current, cols, where)
            elif current not in interfaces:
                raise ValueError("peer line before its interface line")
            else:
                peer = _dump_peer(cols, where)
                interfaces[current].peers[peer.public_key] = peer
        except (ValueError, StateError) as exc:
            msg = str(exc) if isinstance(exc, StateError) else f"{where}: {_safe_reason(exc)}"
            errors[current] = msg
            interfaces.pop(current, None)
    return interfaces, errors


def _safe_reason(exc: Exception) -> str:
    """A parse failure's reason without echoing input (int() puts the bad text in its message)."""
    text = str(exc)
    return "bad number" if "invalid literal" in text else text


def parse_wg_dump(text: str, name: str | None = None) -> dict[str, Interface]:
    """Parse ``wg show all dump`` (or ``wg show NAME dump`` with ``name``) into Interfaces.

    Also the reference the tests compare every other backend against. Raises
    :class:`DumpParseError` on the first malformed line (no key values in the message).
    """
    interfaces, errors = parse_dump(text, name)
    if errors:
        ifname, message = next(iter(errors.items()))
        raise DumpParseError(f"wg dump: interface {ifname}: {message}", ifname)
    return interfaces


def stderr_interfaces(stderr: str) -> dict[str, str]:
    """``Unable to access interface NAME: reason`` lines from wg, by interface name."""
    failed: dict[str, str] = {}
    prefix = "Unable to access interface "
    for line in stderr.splitlines():
        if line.startswith(prefix):
            name, _, reason = line[len(prefix) :].partition(":")
            failed[name.strip()] = reason.strip()[:200] or "unable to access"
    return failed
