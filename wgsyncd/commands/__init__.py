"""The `wgsyncd` command groups that cli.py registers, one module per group.

Each command only parses its options, calls the room that does the work (store,
restore, signing, secrets) and prints text or --json; :mod:`.common` holds what they
share (loading the config, opening the database, one-line errors with exit codes).
"""
