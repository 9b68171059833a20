"""`bastion quickstart` (what `make quickstart` runs): the whole lifecycle, each step checked."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.cli.quickstart_cmd import _interrupted
from bastion.cli.quickstart_plane import MARK, free_port, prepare
from bastion.errors import InvalidInput
from tests.conftest import Cli

BASTION = str(Path(sys.executable).with_name("bastion"))
#: LiRA's shadow models: 4 in CI, the quickstart's own 16 with BASTION_SLOW_SCALE=4.
SHADOW_ARGS = ["--shadow-models", str(4 * int(os.environ.get("BASTION_SLOW_SCALE", "1")))]


def test_the_quickstart_runs_the_whole_lifecycle(tmp_path: Path) -> None:
    home, files, port = tmp_path / "home", tmp_path / "files", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    # Relative folders, as `make quickstart` passes them.
    done = subprocess.run(
        [BASTION, "quickstart", "--port", str(port), "--workdir", files.name, *SHADOW_ARGS],
        env={**env, "BASTION_HOME": home.name, "COLUMNS": "200"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = done.stdout
    assert done.returncode == 0, output[-4000:] + done.stderr[-4000:]
    # (1) Every step ran, in order, and says so.
    steps = ["1. Start", "2. Register", "3. Train", "4. Read the model card", "5a.", "5b.", "6."]
    positions = [output.index(step) for step in steps]
    assert positions == sorted(positions)
    # (2) PII found in the raw data, none left after pseudonymisation.
    assert "us_ssn" in output and "the PII scan now finds nothing" in output
    # (3) DP-SGD spent about its budget; the evaluation evidence is on the card.
    assert "epsilon spent 2.9" in output or "epsilon spent 3.0" in output
    for evidence in ("robust accuracy", "membership inference (lira)", "demographic-parity"):
        assert evidence in output
    # The identifiers stayed out of the features; the lineage leads from the upload to the model.
    assert "identifiers kept out of them: email, ssn, subject_id" in output
    assert "dataset:patients@1 --derived--> dataset:patients@2" in output
    assert "--produced--> model:patients-mlp@1" in output
    # (4)-(5) The gates passed, the engineer could not approve, the reviewer did.
    assert "every gate passed" in output and "refused ml-engineer approving" in output
    assert "reviewer approved: patients-mlp@1 is in production" in output
    assert "4 unseen patients scored by patients-mlp@1" in output
    for refusal in (
        "a request without a key (401)",
        "an invalid body (422)",
        "a model whose stored weights were changed on disk",
    ):
        assert f"refused {refusal}" in output
    # The tampered file is named and the reason is whole (lines are wrapped at 80 columns).
    words = " ".join(output.split())
    assert (
        "changed on disk: deployment patients-mlp-tampered failed: weights.safetensors.bst:"
        in words
    )
    assert "payload authentication failed; the file was altered" in words
    # (6) The audit chain verified; the files the summary points at exist.
    assert "audit events verified" in output and "Every step did what it says" in output
    card = (files / "model-card.html").read_text()
    assert "patients-mlp" in card and "<svg" in card
    assert "164.312" in (files / "hipaa-report.html").read_text()
    passwords = files / "passwords.txt"
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
    names = [line.split("\t")[0] for line in passwords.read_text().splitlines()]
    assert names == ["admin", "ml-engineer", "reviewer"]
    # Secrets stay in their file: no password or serving token is printed.
    for line in passwords.read_text().splitlines():
        assert line.split("\t")[1] not in output
    assert "bsk_" not in output
    # Nothing is left running: the control plane's port is closed again.
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))


def test_the_quickstart_refuses_a_home_it_did_not_make(cli: Cli, home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "master.key").write_text("someone's real key")
    result = cli("quickstart", "--workdir", str(home.parent / "files"))
    assert result.code == 2 and "already holds files the quickstart did not make" in result.stderr
    assert (home / "master.key").read_text() == "someone's real key"


def test_the_quickstart_clears_only_what_an_earlier_quickstart_made(tmp_path: Path) -> None:
    home, files = tmp_path / "home", tmp_path / "files"
    assert prepare(home, files) is False
    (home / "control-plane.db").write_text("old")
    (files / "model-card.html").write_text("old")
    assert prepare(home, files) is True
    assert [p.name for p in home.iterdir()] == [MARK]
    assert not (files / "model-card.html").exists()
    with pytest.raises(InvalidInput, match="must not contain one another"):
        prepare(home, home / "files")


def test_the_quickstart_refuses_a_busy_port(cli: Cli, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("quickstart", "--port", str(port), "--workdir", str(tmp_path / "files"))
    assert result.code == 2 and f"port {port} is in use" in result.stderr


def test_a_second_sigterm_does_not_break_off_the_clean_up() -> None:
    """The first SIGTERM unwinds the quickstart through the code that stops what it started;
    further ones are ignored until then."""
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            _interrupted(signal.SIGTERM, None)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])
