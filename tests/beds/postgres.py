"""Test bed: postgres (fixtures)."""
