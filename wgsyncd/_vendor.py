"""Make the Debian package's vendored libraries importable.

wgconfig is not in Debian, so the .deb ships it in a private directory instead of
depending on a package that does not exist. That directory is put on ``sys.path``
only when it exists (an installed .deb), so a development venv or a pip install
keeps using the wgconfig from PyPI. Import this module before anything imports
wgconfig (``wgsyncd/__init__.py`` does it first).
"""

from __future__ import annotations

import os
import sys

VENDOR_DIR = "/usr/lib/wgsyncd/vendor"


def activate(path: str = VENDOR_DIR) -> bool:
    """Put ``path`` first on sys.path if it exists, so the pinned, tested wgconfig wins.

    First, not last: a different wgconfig that someone pip-installed system-wide
    must not replace the version this package was built and tested with.
    Returns whether the path is (now) on sys.path.
    """
    if not os.path.isdir(path):
        return False
    if path not in sys.path:
        sys.path.insert(0, path)
    return True


activate()
