"""Shared fixtures: an isolated BASTION_HOME and a way to run the CLI in-process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from bastion.cli.main import run
from bastion.config import Settings
from bastion.security.keys import Keyring, load_keyring


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh BASTION_HOME for one test."""
    path = tmp_path / "bastion-home"
    monkeypatch.setenv("BASTION_HOME", str(path))
    for name in ("BASTION_MASTER_KEY", "BASTION_DATABASE_URL", "BASTION_AUDIT_CHECKPOINT_INTERVAL"):
        monkeypatch.delenv(name, raising=False)
    yield path


@pytest.fixture
def settings(home: Path) -> Settings:
    return Settings()


@pytest.fixture
def keyring(settings: Settings) -> Keyring:
    return load_keyring(settings)


def other_keyring(root: Path) -> Keyring:
    """A keyring of an unrelated installation (another cluster)."""
    return load_keyring(Settings(home=root, master_key=None))


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


class Cli(Protocol):
    def __call__(self, *args: str | os.PathLike[str]) -> CliResult: ...


@pytest.fixture
def cli(home: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run ``bastion ARGS`` in-process; returns the exit code and captured output."""

    def invoke(*args: str | os.PathLike[str]) -> CliResult:
        capsys.readouterr()
        code = run([str(arg) for arg in args])
        captured = capsys.readouterr()
        return CliResult(code=code, stdout=captured.out, stderr=captured.err)

    return invoke
