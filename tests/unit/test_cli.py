"""wgsyncd.cli: the command groups of wgsyncd/commands/ are imported only when named."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from wgsyncd.cli import _Commands, main


def test_a_sync_process_imports_no_command_group() -> None:
    code = "import sys, wgsyncd.cli; print(sorted(m for m in sys.modules if m.startswith('wgsyncd.comm')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['wgsyncd.commands', 'wgsyncd.commands.common']"


def test_every_lazy_command_resolves_under_its_name_and_is_listed() -> None:
    ctx = click.Context(main)
    listed = main.list_commands(ctx)
    for name in _Commands.LAZY:
        assert name in listed
        cmd = main.get_command(ctx, name)
        assert isinstance(cmd, click.Command) and cmd.name == name
    assert main.get_command(ctx, "no-such-command") is None
    assert "fleet" in CliRunner().invoke(main, ["--help"]).output
    result = CliRunner().invoke(main, ["db", "--help"])
    assert result.exit_code == 0 and "Usage: main db" in result.output
