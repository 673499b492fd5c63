"""UAPI, the cross-platform control-socket protocol of userspace WireGuard (wireguard-go, boringtun).

``<socket_dir>/<ifname>.sock`` answers ``get=1\\n\\n`` with ``key=value`` lines (keys in
hex), ending with ``errno=N`` and an empty line; ``set=1`` lines change the device and
are answered with ``errno=N``. One exchange for both (:func:`exchange`, one overall
deadline), used by the kernel source's ``uapi`` backend and by ``restore --apply``;
and the parser of a ``get`` reply, which reads 10,000 peers in well under a second,
reusing a previous read's Peer for every peer block that did not change.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import socket
import stat
import time
from pathlib import Path

from wgsyncd.canonical import normalise_prefix, parse_endpoint_text
from wgsyncd.state import Interface, Peer, StateError
from wgsyncd.wire.values import (
    InterfaceReadError,
    RawPeer,
    key_from_wire,
    make_interface,
)

REQUEST = b"get=1\n\n"
_CHUNK = 1 << 16
# the most one reply may hold: a rogue or broken daemon streaming without end must not
# take the agent's memory (10,000 peers with a few allowed IPs each are about 4 MiB)
MAX_REPLY = 256 << 20


class StaleSocket(Exception):
    """The socket file exists but nobody listens: the daemon is gone, so no interface (as ``wg``)."""


class SetRefused(Exception):
    """The daemon answered a ``set=1`` request with an errno other than 0."""

    def __init__(self, code: str) -> None:
        name = errno.errorcode.get(int(code), "?") if code.isdigit() else "?"
        super().__init__(f"errno={code} ({name})")


def list_interfaces(socket_dir: str) -> list[str]:
    """Names of the ``*.sock`` sockets in ``socket_dir``, sorted; a missing directory means none."""
    try:
        entries = list(os.scandir(socket_dir))
    except FileNotFoundError:
        return []
    names = []
    for entry in entries:
        if not entry.name.endswith(".sock"):
            continue
        try:
            if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                names.append(entry.name[: -len(".sock")])
        except FileNotFoundError:
            continue  # vanished while listing
    return sorted(names)


def socket_path(socket_dir: str, name: str) -> str:
    """Where ``name``'s control socket lives."""
    return str(Path(socket_dir) / f"{name}.sock")


def exchange(path: str, request: bytes, timeout: float) -> bytearray:
    """Send one request and read until the terminating empty line, with one overall deadline.

    Raises StaleSocket when nobody listens (connection refused) and
    InterfaceReadError for everything else that stops a complete answer.
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except ConnectionRefusedError:
            raise StaleSocket(path) from None
        except TimeoutError:
            raise InterfaceReadError(f"no answer within {timeout:g} s (connect)") from None
        except OSError as exc:
            raise InterfaceReadError(f"cannot connect: {exc.strerror or exc}") from None
        try:
            sock.sendall(request)
            return _receive(sock, deadline, timeout)
        except TimeoutError:
            raise InterfaceReadError(f"no answer within {timeout:g} s") from None
        except OSError as exc:
            raise InterfaceReadError(f"connection failed mid-read: {exc.strerror or exc}") from None


def get(path: str, timeout: float) -> bytearray:
    """The raw ``get=1`` reply of one control socket (see :func:`exchange`)."""
    return exchange(path, REQUEST, timeout)


def set_device(path: str, request: bytes, timeout: float) -> None:
    """Send a ``set=1`` request; anything but ``errno=0`` back is SetRefused."""
    reply = exchange(path, request, timeout).decode("ascii", errors="replace").strip()
    if reply != "errno=0":
        raise SetRefused(reply.rpartition("errno=")[2] or "?")


def hex_key(key_b64: str) -> str:
    """A base64 key as the control socket's hex."""
    return base64.b64decode(key_b64).hex()


def _receive(sock: socket.socket, deadline: float, timeout: float) -> bytearray:
    """Collect chunks until the reply ends in ``\\n\\n``; EOF before that is a vanished daemon.

    A reply over MAX_REPLY bytes is refused: the read is bounded in memory as in time.
    """
    buf = bytearray()
    while not buf.endswith(b"\n\n"):
        if len(buf) > MAX_REPLY:
            raise InterfaceReadError(f"reply larger than {MAX_REPLY >> 20} MiB without its end: refused")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(_CHUNK)
        if not chunk:
            raise InterfaceReadError(
                f"connection closed before the reply was complete ({len(buf)} bytes read)"
            )
        buf += chunk
    return buf  # not bytes(buf): a copy of a 10,000-peer reply is 2.5 MiB more at the read's peak


def _ascii(data: bytes | bytearray) -> str:
    """The reply as text; UAPI is ASCII, anything else is a broken daemon."""
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise InterfaceReadError("reply is not ASCII") from None


class _DeviceFields:
    """The interface-level values; absent lines mean "not set" (wireguard-go omits zeros)."""

    __slots__ = ("fwmark", "port", "private")

    def __init__(self) -> None:
        self.private: str | None = None
        self.port = 0
        self.fwmark = 0


_PEER_INTS = {
    "last_handshake_time_sec": "hs",
    "rx_bytes": "rx",
    "tx_bytes": "tx",
    "persistent_keepalive_interval": "keepalive",
}
# the largest value each number may have (u64 counters, u16 ports and intervals, u32 fwmark)
_MAX = {
    "hs": 2**63 - 1,
    "rx": 2**64 - 1,
    "tx": 2**64 - 1,
    "keepalive": 65535,
    "port": 65535,
    "fwmark": 2**32 - 1,
}


def _uint(value: str, what: str) -> int:
    """An unsigned decimal as wireguard-go prints it; Python's int() also takes ``-1``, ``+5``, ``1_0``."""
    if not value.isdigit():
        raise ValueError("not an unsigned number")
    number = int(value)
    if number > _MAX[what]:
        raise ValueError("number out of range")
    return number


def parse_reply(
    name: str, data: bytes | bytearray, memo: dict[bytes, Peer], fresh: dict[bytes, Peer]
) -> Interface:
    """A raw ``get=1`` reply: unchanged peer blocks from ``memo`` (see _parse_blocks), or the
    line parser, which names the bad line, when anything about the reply is off."""
    fast = _parse_blocks(name, data, memo, fresh)
    return fast if fast is not None else parse_uapi(name, _ascii(data))


def parse_uapi(name: str, text: str) -> Interface:
    """Turn a ``get=1`` reply into an Interface, or raise InterfaceReadError naming the line.

    A reply without ``errno=0`` is an error (the daemon said so, or the reply is cut);
    unknown keys are skipped so a newer daemon adding fields still reads.
    """
    device = _DeviceFields()
    peers: list[RawPeer] = []
    lineno, key = 0, ""
    try:
        status = _parse_lines(text.split("\n"), device, peers)
    except _LineError as exc:
        lineno, key, cause = exc.args
        if isinstance(cause, StateError):
            raise InterfaceReadError(str(cause)) from None
        if isinstance(cause, InterfaceReadError):
            raise InterfaceReadError(f"line {lineno}: {cause}") from None
        raise InterfaceReadError(f"line {lineno}: bad value for {key}") from None
    if status is None:
        raise InterfaceReadError("reply has no errno line")
    if status != 0:
        raise InterfaceReadError(f"daemon answered errno={status} ({errno.errorcode.get(status, '?')})")
    iface = make_interface(name, device.private, None, device.port, device.fwmark, "userspace")
    for p in peers:
        try:
            built = p.build()
        except StateError as exc:
            raise InterfaceReadError(str(exc)) from None
        iface.peers[built.public_key] = built
    return iface


_TAIL = b"\nerrno=0\n\n"
_PEER_KEY = b"public_key="
_PEER_SEP = b"\n" + _PEER_KEY


def _parse_blocks(
    name: str, data: bytes | bytearray, memo: dict[bytes, Peer], fresh: dict[bytes, Peer]
) -> Interface | None:
    """The reply walked per-peer block of bytes, each looked up in ``memo`` first.

    A peer whose block is byte-identical to the last read (same config, counters and
    handshake; compared by a 16-byte blake2b digest) is the same Peer object: not
    decoded or parsed again and, downstream, not merged or hashed again. ``fresh``
    receives this read's blocks' digests. None when the reply is anything but a
    clean ``errno=0`` answer in ASCII: the line parser then reads it and names the
    bad line.
    """
    if not data.endswith(_TAIL):
        return None
    stop = len(data) - len(_TAIL)
    if data.startswith(_PEER_KEY):  # no device lines at all: the reply starts with a peer
        header_end, at = 0, len(_PEER_KEY)
    else:
        header_end = data.find(_PEER_SEP, 0, stop)
        at = -1 if header_end < 0 else header_end + len(_PEER_SEP)
        header_end = stop if header_end < 0 else header_end
    device = _DeviceFields()
    try:
        header = data[:header_end].decode("ascii")
        if header and _parse_lines(header.split("\n"), device, []) is not None:
            return None
        iface = make_interface(name, device.private, None, device.port, device.fwmark, "userspace")
        with memoryview(data) as view:
            while at >= 0:  # block by block in place: no list of 10,000 block copies
                nxt = data.find(_PEER_SEP, at, stop)
                end = stop if nxt < 0 else nxt
                # the memo keeps a digest, not the block: a third of the block's memory, and no key bytes
                digest = hashlib.blake2b(view[at:end], digest_size=16).digest()
                peer = memo.get(digest)
                if peer is None:
                    raw: list[RawPeer] = []
                    lines = ("public_key=" + data[at:end].decode("ascii")).split("\n")
                    if _parse_lines(lines, _DeviceFields(), raw) is not None:
                        return None
                    peer = raw[0].build()
                fresh[digest] = peer
                iface.peers[peer.public_key] = peer
                at = -1 if nxt < 0 else nxt + len(_PEER_SEP)
    except (_LineError, StateError, UnicodeDecodeError):
        return None
    return iface


class _LineError(Exception):
    """(lineno, key, cause) of the first line that failed; turned into InterfaceReadError."""


def _parse_lines(lines: list[str], device: _DeviceFields, peers: list[RawPeer]) -> int | None:
    """The hot loop (100,000+ lines for 10,000 peers): peer lines inline, most frequent first."""
    peer: RawPeer | None = None
    status: int | None = None
    lineno, key = 0, ""
    try:
        for lineno, line in enumerate(lines, 1):
            if not line:
                continue
            key, sep, value = line.partition("=")
            if not sep:
                raise InterfaceReadError("not a key=value line")
            if status is not None:
                raise InterfaceReadError("data after errno line")
            if peer is not None:
                if key == "allowed_ip":
                    peer.allowed.append(normalise_prefix(value))
                elif key in _PEER_INTS:
                    what = _PEER_INTS[key]
                    setattr(peer, what, _uint(value, what))
                elif key == "public_key":
                    peer = RawPeer(key_from_wire(value, f"line {lineno}: public_key"))
                    peers.append(peer)
                elif key == "endpoint":
                    peer.endpoint = parse_endpoint_text(value)
                elif key == "preshared_key":
                    peer.psk = key_from_wire(value, f"line {lineno}: preshared_key")
                elif key == "errno":
                    status = int(value)
            elif key == "public_key":
                peer = RawPeer(key_from_wire(value, f"line {lineno}: public_key"))
                peers.append(peer)
            elif key == "private_key":
                device.private = key_from_wire(value, f"line {lineno}: private_key")
            elif key == "listen_port":
                device.port = _uint(value, "port")
            elif key == "fwmark":
                device.fwmark = _uint(value, "fwmark")
            elif key == "errno":
                status = int(value)
    except (ValueError, InterfaceReadError) as exc:  # StateError is a ValueError too
        raise _LineError(lineno, key, exc) from None
    return status
