"""`bastion up`: the laptop / air-gapped setup in one command, and the ready smoke example."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from tests.server.test_live import BASTION, _bastion, _env, _free_port, _wait_healthy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "smoke.yaml"


def _up(home: Path, port: int) -> subprocess.Popen[str]:
    """``bastion up`` in the background, its output (stdout and stderr) in one pipe."""
    return subprocess.Popen(
        [BASTION, "up", "--port", str(port)],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_up_runs_the_example_and_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = _free_port()
    up = _up(home, port)
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
    again = _up(home, port)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}")
        assert _bastion(home, "run", "submit", str(EXAMPLE), "--follow").returncode == 0
    finally:
        again.send_signal(signal.SIGINT)
        again.communicate(timeout=60)


def test_a_taken_port_is_named_with_its_holder(tmp_path: Path) -> None:
    import os
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [BASTION, "up", "--port", str(port)],
            env=_env(tmp_path / "home"),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 2
    assert f"port {port} is in use (PID {os.getpid()}: " in done.stderr
    assert not (tmp_path / "home" / "credentials.json").exists()  # refused before anything


def test_sigterm_during_start_up_stops_the_control_plane_and_a_half_made_home_is_repaired(
    tmp_path: Path,
) -> None:
    import time

    from bastion.ports import port_owner

    home = tmp_path / "home"
    port = _free_port()
    up = _up(home, port)
    deadline = time.monotonic() + 120  # until the control plane is being started
    while not (home / "logs" / "control-plane.log").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    up.send_signal(signal.SIGTERM)
    output = up.communicate(timeout=60)[0]
    assert "Bastion stopped" in output, output
    deadline = time.monotonic() + 30  # nothing it started is left holding the port
    while port_owner(port) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert port_owner(port) is None
    # The first start saved the admin's credentials but its agent never joined: repaired.
    assert (home / "credentials.json").exists() and not (home / "agent-local.json").exists()
    again = _up(home, port)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}")
        assert _bastion(home, "run", "submit", str(EXAMPLE), "--follow").returncode == 0
    finally:
        again.send_signal(signal.SIGINT)
        output = again.communicate(timeout=60)[0]
    assert "the local agent never joined; it joins now with a new token" in output
