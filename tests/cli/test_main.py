"""The CLI as a whole: exit codes, error lines, the demo that `make quickstart` runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bastion import __version__
from tests.conftest import Cli


def test_version(cli: Cli) -> None:
    result = cli("--version")
    assert result.code == 0 and result.stdout.strip() == f"bastion {__version__}"


def test_unknown_command_is_usage_error(cli: Cli) -> None:
    result = cli("frobnicate")
    assert result.code == 2
    assert "No such command" in result.stderr


def test_demo_runs_end_to_end(cli: Cli, home: Path) -> None:
    result = cli("demo")
    assert result.code == 0, result.stderr
    for step in ("1. Encrypt", "2. Sign", "3. Scan", "4. Rotate", "5. Verify"):
        assert step in result.stdout
    assert sum(line.startswith("  refused") for line in result.stdout.splitlines()) == 3
    assert "Demo complete" in result.stdout
    demo = home / "demo"
    assert (demo / "model.sig").is_file() and (demo / "patients.csv.bastion").is_file()
    assert not (demo / "tampered.csv").exists()
    audit = cli("audit", "verify")
    assert audit.code == 0 and "events verified" in audit.stdout


def test_console_script_exit_codes(tmp_path: Path) -> None:
    """The installed `bastion` entry point exits with the documented codes."""
    env = {**os.environ, "BASTION_HOME": str(tmp_path / "home")}
    env.pop("BASTION_MASTER_KEY", None)
    exe = Path(sys.executable).with_name("bastion")
    bad = tmp_path / "bad.enc"
    bad.write_bytes(b"not an artifact")
    refused = subprocess.run(
        [str(exe), "decrypt", str(bad), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and str(bad) in refused.stderr
    usage = subprocess.run(
        [str(exe), "decrypt"], capture_output=True, text=True, env=env, check=False
    )
    assert usage.returncode == 2


def test_every_listed_verb_loads_by_its_name() -> None:
    from bastion.cli.main import NOUNS, VERBS, _load

    for name in [*NOUNS, *VERBS]:
        command = _load(name)
        assert command is not None and command.name == name, name
    assert _load("no-such-verb") is None


def test_a_full_disk_is_one_line_not_a_traceback(
    cli: Cli, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from bastion.cli import crypto_cmd

    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out.bst"))

    monkeypatch.setattr(crypto_cmd, "encrypt_file", full)
    source = tmp_path / "in.txt"
    source.write_text("data")
    result = cli("encrypt", source, tmp_path / "out.bst")
    assert result.code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: No space left on device: {tmp_path / 'out.bst'}; free some space and run it "
        "again (files are written whole or not at all)"
    ]


@pytest.mark.postgres
def test_a_missing_postgres_database_is_one_line(cli: Cli, home: Path) -> None:
    from sqlalchemy.engine import make_url

    from tests.pg import PG_URL

    url = make_url(PG_URL).set(database="bastion_no_such_database", password="hidden-pw")
    result = cli("server", "init", "--db", url.render_as_string(hide_password=False))
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot use the database postgresql+psycopg://")
    assert "bastion_no_such_database" in lines[0] and "hidden-pw" not in lines[0]
    assert "Traceback" not in result.stderr


def test_shell_completion_completes_a_nouns_verbs() -> None:
    env = {
        **os.environ,
        "COMP_WORDS": "bastion run l",
        "COMP_CWORD": "2",
        "_BASTION_COMPLETE": "complete_bash",
    }
    done = subprocess.run(
        [sys.executable, "-c", "from bastion.cli.main import main; main()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert set(done.stdout.split()) == {"list", "logs"}, done.stderr
