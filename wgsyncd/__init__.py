"""wgsyncd: makes a VPN host's WireGuard state durable in PostgreSQL."""

__version__ = "0.1.0"
