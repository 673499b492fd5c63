"""Shared fixtures: the real test beds live in tests/beds/, one module each."""

pytest_plugins = [
    "tests.beds.postgres",
    "tests.beds.pgbouncer",
    "tests.beds.roles",
    "tests.beds.fleet_world",
    "tests.beds.wireguard",
    "tests.beds.wgrest_server",
    "tests.beds.nspawn",
]
