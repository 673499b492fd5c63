"""wgsyncd.malloc: glibc accepts the settings; without glibc nothing is changed."""

from __future__ import annotations

import platform
import subprocess
import sys


def test_tune_applies_on_glibc() -> None:
    # a fresh process, so this test's own heap settings stay as they were
    code = "from wgsyncd import malloc; print(malloc.tune(), malloc.tune())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    expected = platform.libc_ver()[0] == "glibc"
    assert out.split() == [str(expected), str(expected)]  # and calling it twice is harmless


def test_tune_finds_the_c_library_without_ldconfig() -> None:
    # ctypes.util.find_library runs `ldconfig -p` in a subprocess: too slow for every `wgsyncd sync`
    code = "import sys; from wgsyncd import malloc; malloc.tune(); print('ctypes.util' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
