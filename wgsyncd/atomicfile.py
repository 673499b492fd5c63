"""One way to replace a small file: a reader sees the old file or the new one, never half.

Why one home: the state dir (last-cycle, last-signed, wgrest-seen, metrics), the
persist snapshot, the Prometheus textfile and the operator's trust file all need the
same steps, and each step matters: the temp file lives in the target's directory (a
rename is atomic only within one filesystem), its name starts with a dot and ends in
``.tmp`` (node_exporter's textfile collector reads ``*.prom`` only), the mode is set on
the open file before any byte is written (a secret is never readable by others, even
for a moment), and fsync before the rename makes it survive a power cut.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(
    path: str | os.PathLike[str], text: str | bytes, mode: int = 0o600, *, fsync: bool = True
) -> None:
    """Replace ``path`` with ``text`` (UTF-8, or bytes as they are) at ``mode``; the directory must exist.

    ``fsync=False`` for a cache that checks itself when read (synccache): a power cut may
    leave it empty or cut short, never half old and half new under its own checksum.
    """
    if isinstance(text, bytes):
        write_atomic_with(path, lambda fh: fh.write(text), mode, fsync=fsync)
    else:
        write_atomic_with(path, lambda fh: fh.write(text.encode("utf-8")), mode, fsync=fsync)


def write_atomic_with(
    path: str | os.PathLike[str], fill: Callable[[BinaryIO], object], mode: int = 0o600, *, fsync: bool = True
) -> None:
    """Like write_atomic, but ``fill`` writes the bytes into the open temp file (binary, seekable).

    Why: a big file (the 10,000-peer sync cache) is streamed, never held whole in memory.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fill(fh)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
