"""Test beds: real PostgreSQL, wireguard-go, wgrest, systemd, podman, qemu."""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    """CI runs as root with every bed installed: there a missing bed is a failure, not a skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(bed: str, reason: str) -> None:
    """Skip with the reason; fail loudly in CI, where a skipped bed would prove nothing."""
    if in_ci():
        pytest.fail(f"{bed} bed unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"{bed} bed unavailable: {reason}")
