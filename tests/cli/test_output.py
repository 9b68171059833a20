"""Piped or redirected, the CLI's tables are never wrapped or cut: scripts read whole cells."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from rich.console import Console
from rich.table import Table

from bastion.cli.context import _width

SHA = "ab" * 32


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_pipe_gets_whole_cells_and_a_terminal_its_own_width(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    piped = io.StringIO()
    console = Console(file=piped, width=_width(piped), highlight=False)
    table = Table("file", "bytes", "sha256")
    table.add_row("a/very/long/path/to/some/module/inside/the/package.py", "123456", SHA)
    console.print(table)
    row = next(line for line in piped.getvalue().splitlines() if "package.py" in line)
    assert SHA in row and "…" not in piped.getvalue()
    assert _width(_Terminal()) is None  # a terminal: rich measures it
    monkeypatch.setenv("COLUMNS", "60")
    assert _width(piped) is None  # COLUMNS wins


def test_the_cli_prints_a_long_row_whole_into_a_pipe() -> None:
    code = (
        "from rich.table import Table; from bastion.cli.context import out; "
        f"t = Table('a', 'b'); t.add_row('x' * 70, '{SHA}'); out.print(t)"
    )
    env_free = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env_free, check=True
    )
    assert any(SHA in line and "x" * 70 in line for line in done.stdout.splitlines())
