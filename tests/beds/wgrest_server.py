"""Test bed: wgrest_server (fixtures)."""
