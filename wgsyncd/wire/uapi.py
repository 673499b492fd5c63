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
    whole = _Whole()
    _exchange(path, request, timeout, whole)
    return whole.buf  # not bytes(buf): a copy of a 10,000-peer reply is 2.5 MiB more at the read's peak


def read(
    name: str, path: str, timeout: float, memo: dict[bytes, Peer], fresh: dict[bytes, Peer]
) -> Interface:
    """``get=1``, its reply parsed as it arrives (_Blocks: unchanged peers from ``memo``).

    A reply the block walk gives up on (not a clean ``errno=0`` answer in ASCII) is
    asked for once more, within the same deadline, and read whole by the line parser,
    which names the bad line: the walk keeps no more of a reply than the block still
    arriving, so the first one is gone by then. Errors as :func:`exchange`.
    """
    deadline = time.monotonic() + timeout
    blocks = _Blocks(name, memo, fresh)
    if _exchange(path, REQUEST, timeout, blocks, deadline):
        iface = blocks.finish()
        if iface is not None:
            return iface
    del blocks  # what the walk kept goes before the whole reply comes
    whole = _Whole()
    _exchange(path, REQUEST, timeout, whole, deadline)
    return parse_uapi(name, _ascii(whole.buf))


def _exchange(
    path: str, request: bytes, timeout: float, reader: _Whole | _Blocks, deadline: float | None = None
) -> bool:
    """Connect, send ``request``, feed the answer to ``reader``; False when the reader gave up.

    ``deadline`` (monotonic): shared with an earlier exchange; errors still name ``timeout``,
    the operator's setting, not what was left of it.
    """
    deadline = time.monotonic() + timeout if deadline is None else deadline
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise InterfaceReadError(f"no answer within {timeout:g} s")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(remaining)
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
            return _receive(sock, deadline, reader)
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


def _receive(sock: socket.socket, deadline: float, reader: _Whole | _Blocks) -> bool:
    """Feed chunks to ``reader`` until the reply ends in ``\\n\\n``; EOF before that is a vanished
    daemon. False as soon as the reader gives up.

    A reply over MAX_REPLY bytes is refused: the read is bounded in memory as in time.
    """
    total = 0
    while not reader.ended():
        if total > MAX_REPLY:
            raise InterfaceReadError(f"reply larger than {MAX_REPLY >> 20} MiB without its end: refused")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(_CHUNK)
        if not chunk:
            raise InterfaceReadError(f"connection closed before the reply was complete ({total} bytes read)")
        total += len(chunk)
        if not reader.feed(chunk):
            return False
    return True


class _Whole:
    """The reply kept whole (a ``set`` answer, restore's read, the line parser's second ask)."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def ended(self) -> bool:
        """The terminating empty line arrived."""
        return self.buf.endswith(b"\n\n")

    def feed(self, chunk: bytes) -> bool:
        """Keep it all."""
        self.buf += chunk
        return True


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
    """The whole reply through the block walk (_Blocks), fed at once."""
    blocks = _Blocks(name, memo, fresh)
    return blocks.finish() if blocks.feed(data) else None


class _Blocks:
    """The reply walked per-peer block of bytes as it arrives, each block looked up in ``memo`` first.

    A peer whose block is byte-identical to the last read (same config, counters and
    handshake; compared by a 16-byte blake2b digest) is the same Peer object: not
    decoded or parsed again and, downstream, not merged or hashed again. ``fresh``
    receives this read's blocks' digests. Only the block still arriving is kept
    (at 10,000 peers the whole reply was ~2.5 MiB of each read's peak). The walk
    gives up (``feed`` False, ``finish`` None) when the reply is anything but a clean
    ``errno=0`` answer in ASCII: the line parser then reads the whole reply and
    names the bad line.
    """

    __slots__ = ("buf", "fresh", "iface", "memo", "name", "scanned")

    def __init__(self, name: str, memo: dict[bytes, Peer], fresh: dict[bytes, Peer]) -> None:
        self.name, self.memo, self.fresh = name, memo, fresh
        self.buf = bytearray()
        self.scanned = 0  # no separator starts before this offset of buf: each byte is searched once
        self.iface: Interface | None = None  # made once the device lines are read

    def ended(self) -> bool:
        """The reply's terminating empty line arrived (the buffer's end is the reply's end)."""
        return self.buf.endswith(b"\n\n")

    def feed(self, chunk: bytes | bytearray) -> bool:
        """Take the next bytes and walk every block they complete; False = give up."""
        self.buf += chunk
        try:
            if self.iface is None and not self._header():
                return True  # the device lines are not all here yet
            return self._walk(final=False)
        except (_LineError, StateError, UnicodeDecodeError):
            return False

    def finish(self) -> Interface | None:
        """After the terminating empty line: the last block and ``errno=0``, or None (give up)."""
        buf = self.buf
        if not buf.endswith(_TAIL) and buf != _TAIL[1:]:
            return None
        try:
            if self.iface is None:  # no peer line came (feed's _header took any): device lines only
                self._device(buf[: len(buf) - len(_TAIL)].decode("ascii") if buf != _TAIL[1:] else "")
                return self.iface
            if not self._walk(final=True):
                return None
        except (_LineError, StateError, UnicodeDecodeError):
            return None
        return self.iface

    def _device(self, header: str) -> None:
        """The interface from the device lines; any errno among them makes the walk give up."""
        device = _DeviceFields()
        if header and _parse_lines(header.split("\n"), device, []) is not None:
            raise _LineError(0, "errno", None)
        self.iface = make_interface(self.name, device.private, None, device.port, device.fwmark, "userspace")

    def _header(self) -> bool:
        """Read the device lines once the first peer's ``public_key=`` line began; True when done.

        The buffer then starts with the first block's text after ``public_key=``.
        """
        buf = self.buf
        if buf.startswith(_PEER_KEY):  # no device lines at all: the reply starts with a peer
            self._device("")
            del buf[: len(_PEER_KEY)]
            return True
        if len(buf) < len(_PEER_KEY) and _PEER_KEY.startswith(bytes(buf)):
            return False
        cut = buf.find(_PEER_SEP, self.scanned)
        if cut < 0:
            self.scanned = max(0, len(buf) - len(_PEER_SEP) + 1)
            return False
        self._device(buf[:cut].decode("ascii"))
        del buf[: cut + len(_PEER_SEP)]
        self.scanned = 0
        return True

    def _walk(self, final: bool) -> bool:
        """Every complete block in the buffer (and, when ``final``, the last one before errno)."""
        buf, iface = self.buf, self.iface
        assert iface is not None
        stop = len(buf) - len(_TAIL) if final else len(buf)
        at = 0
        with memoryview(buf) as view:
            while True:
                nxt = buf.find(_PEER_SEP, max(at, self.scanned), stop)
                if nxt < 0 and not final:
                    break
                end = stop if nxt < 0 else nxt
                # the memo keeps a digest, not the block: a third of the block's memory, and no key bytes
                digest = hashlib.blake2b(view[at:end], digest_size=16).digest()
                peer = self.memo.get(digest)
                if peer is None:
                    raw: list[RawPeer] = []
                    lines = ("public_key=" + buf[at:end].decode("ascii")).split("\n")
                    if _parse_lines(lines, _DeviceFields(), raw) is not None:
                        return False
                    peer = raw[0].build()
                self.fresh[digest] = peer
                iface.peers[peer.public_key] = peer
                if nxt < 0:
                    break
                at = nxt + len(_PEER_SEP)
        del buf[:at]
        self.scanned = max(0, len(buf) - len(_PEER_SEP) + 1)
        return True


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
