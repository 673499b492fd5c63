"""The one exception every part of restore raises.

Its own module so that each room of restore (loading, files, running interfaces,
netlink, wgrest) can raise it without importing the others.
"""

from __future__ import annotations


class RestoreError(Exception):
    """Restore refused or failed; one line naming host/version/interface/file/URL, never a key."""
