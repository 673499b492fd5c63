"""wgsyncd: makes a VPN host's WireGuard state durable in PostgreSQL."""

from wgsyncd import _vendor  # noqa: F401  (the .deb's private copy of wgconfig, when installed)

__version__ = "0.1.0"
