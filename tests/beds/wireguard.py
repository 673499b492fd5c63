"""Test bed: wireguard (fixtures)."""
