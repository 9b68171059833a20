"""`bastion up`: the laptop / air-gapped setup in one command, and the ready smoke example."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from tests.server.test_live import BASTION, _bastion, _env, _free_port, _wait_healthy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "smoke.yaml"


def test_up_runs_the_example_and_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = _free_port()
    up = subprocess.Popen(
        [BASTION, "up", "--port", str(port)],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}")
        result = _bastion(home, "run", "submit", str(EXAMPLE), "--follow")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "step 5/5" in result.stdout and "succeeded" in result.stdout
        clusters = _bastion(home, "cluster", "list")
        assert "local" in clusters.stdout and "published" in clusters.stdout
    finally:
        up.send_signal(signal.SIGINT)
        output = up.communicate(timeout=60)[0]
    assert "Bastion is up" in output and "Bastion stopped" in output
    assert up.returncode == 0
    # Up again on the same home: reuses the admin, project, cluster and agent credential.
    again = subprocess.Popen(
        [BASTION, "up", "--port", str(port)],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}")
        assert _bastion(home, "run", "submit", str(EXAMPLE), "--follow").returncode == 0
    finally:
        again.send_signal(signal.SIGINT)
        again.communicate(timeout=60)
