"""glibc malloc settings that keep a 10,000-peer agent's peak RSS down.

Why: a cycle's big transients (a UAPI reply, wgrest's HTTP bodies, psycopg's
buffers: each several MiB) are freed again, but glibc raises its mmap threshold
after the first such free (up to 32 MiB), so the next ones land in the heap,
where freed space is fragmented and rarely handed back; and the three source
threads each get their own arena, each keeping its own free space. Measured at
10,000 peers (tests/bench/memory.py): daemon peak 123 -> 107 MiB with a fixed
128 KiB mmap threshold and 2 arenas. The settings change where memory comes
from, never what the program computes.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

# mallopt(3) parameters (malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024  # glibc's starting value, fixed: big buffers go back to the OS when freed
ARENA_MAX = 2


def tune() -> bool:
    """Apply the settings once at process start; False (and nothing changed) without glibc.

    The C library is the one this interpreter already runs on (dlopen(NULL), the
    process's own symbols): not ctypes.util.find_library, which imports shutil,
    subprocess and tempfile and runs `ldconfig -p` (2-90 ms of every `wgsyncd sync`).
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        gnu_get_libc_version = libc.gnu_get_libc_version  # only glibc has it
    except (OSError, AttributeError):
        return False
    del gnu_get_libc_version
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_ARENA_MAX, ARENA_MAX) == 1
    if not ok:
        log.debug("mallopt refused the settings; glibc's defaults stay")
    return ok
