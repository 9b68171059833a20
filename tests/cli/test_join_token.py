"""The agent's one-time join token comes from a file or the environment, once."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from bastion.cli.agent_cmd import join_token_from
from bastion.errors import InvalidInput
from tests.conftest import Cli


def test_the_join_token_is_read_from_a_private_file_or_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "join-token"
    token_file.write_text("bstjoin_abc_def\n")
    token_file.chmod(0o600)
    assert join_token_from(option=None, file=token_file, env=None) == "bstjoin_abc_def"
    assert join_token_from(option=None, file=None, env=SecretStr("bstjoin_x_y")) == "bstjoin_x_y"
    assert join_token_from(option=None, file=None, env=None) is None
    token_file.chmod(0o644)
    with pytest.raises(InvalidInput, match="readable by group or others; chmod 600"):
        join_token_from(option=None, file=token_file, env=None)


def test_the_join_token_is_given_once(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "join-token"
    token_file.write_text("bstjoin_abc_def\n")
    token_file.chmod(0o600)
    monkeypatch.setenv("BASTION_JOIN_TOKEN", "bstjoin_x_y")
    args = ("agent", "start", "--cluster", "c1", "--control-plane", "http://127.0.0.1:9")
    twice = cli(*args, "--join-token-file", token_file)
    assert twice.code == 2
    assert "not by --join-token-file and BASTION_JOIN_TOKEN" in twice.stderr
    assert "bstjoin_" not in twice.stdout + twice.stderr
    monkeypatch.delenv("BASTION_JOIN_TOKEN")
    missing = cli(*args, "--join-token-file", tmp_path / "nowhere")
    assert missing.code == 2 and "no such file" in missing.stderr
