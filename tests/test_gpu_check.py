"""benchmarks/gpu_check.py still runs where CI runs: without a GPU it says so and exits 0.

Not a ``bench_*.py`` (tests/test_benchmarks.py lists those): it measures nothing on a CPU,
and docs/benchmarks.md keeps its row "not yet measured on a GPU" until it ran on one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_the_gpu_check_runs_its_tiny_cpu_pass() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "no GPU: not yet measured on a GPU"
    assert [line.split(":")[0] for line in lines[2:5]] == [
        "digits CNN",
        "digits CNN, bf16",
        "patients MLP, DP-SGD",
    ]
    assert all(line.endswith("same seed twice -> identical weights") for line in lines[2:5])
    assert "equality checks: 3/3 identical on cpu" in lines
    # The evaluations and the server's forward pass ran on the device (here the CPU).
    assert [line.split(":")[0] for line in lines[-5:-1]] == [
        "PGD robust accuracy (integer pixels)",
        "LiRA (4 shadows) AUC",
        "Captum IG predicted labels",
        "served probabilities",
    ]
    assert lines[-1] == "device checks: 4/4 agree with the CPU"
