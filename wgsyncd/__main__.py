"""`python -m wgsyncd` runs the CLI."""

from wgsyncd.cli import entry

entry()
