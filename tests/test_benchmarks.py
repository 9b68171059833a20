"""Every benchmark still runs: each script at a tiny size, checked for its ratio, printed last.

Not a timing test (nothing here reads a figure): it keeps ``make bench`` from rotting, as it
did when ``bench_server`` met a spec the API had come to refuse. The real sizes are the
scripts' defaults; docs/benchmarks.md records what they measure.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

#: script -> (tiny arguments, what its ratio line looks like)
TINY: dict[str, tuple[list[str], str]] = {
    "bench_audit.py": (
        ["--events", "2000", "--batch", "100", "--reps", "1"],
        r"ratio chained/plain",
    ),
    "bench_envelope.py": (["--size-mib", "2", "--reps", "1"], r"headline ratio"),
    "bench_server.py": (
        ["--seconds", "1", "--connections", "2", "--reps", "1", "--tokens", "20", "--no-postgres"],
        r"^ratio to bare, authenticated read with distinct tokens",
    ),
    "bench_dispatch.py": (
        ["--runs", "2", "--latency-samples", "1", "--no-ray"],
        r"ratio to the floor",
    ),
    "bench_pii.py": (
        ["--rows", "2000", "--presidio-rows", "100", "--reps", "1"],
        r"throughput ratio Bastion / Presidio",
    ),
    "bench_dp.py": (["--reps", "1", "--smoke"], r"\d+\.\d+x$"),
    "bench_eval.py": (
        ["--reps", "1", "--shadows", "2", "--skip-ray", "--lira", "patients", "--smoke"],
        r"\d+\.\d+x",
    ),
    "bench_adversarial.py": (
        ["--seeds", "1", "--eps", "0.2", "--fpr", "0.05", "--epochs", "3", "--rows", "40"],
        r"^ratio flagged/false-positive rate \(white-box, eps 0\.2, .*\): .* = \d+\.\dx$",
    ),
    "bench_serve.py": (
        ["--reps", "1", "--seconds", "0.5", "--concurrency", "1", "--replicas", "1"],
        r"^ratio Bastion/bare throughput at \d+ connections?, \d+ replicas?: \d+\.\d+x$",
    ),
    "bench_sandbox.py": (["--reps", "1"], r"ratio sandboxed/unsandboxed"),
    "bench_scale.py": (
        ["--rows", "600", "--epochs", "2", "--repeats", "1"],
        r"^ratio Bastion/baseline epoch time \(2 workers\): \d+\.\d+x$",
    ),
    "bench_cli.py": (["--reps", "1", "--runs", "2"], r"ratio run-list CPU"),
    "bench_extraction.py": (
        ["--reps", "1", "--budget", "200", "--victim-epochs", "3", "--surrogate-epochs", "3"],
        r"ratio best thief's agreement",
    ),
    "bench_ingest.py": (["--rows", "2000", "--reps", "1"], r"peak RSS ratio baseline / Bastion"),
    "bench_text.py": (
        ["--rows", "30", "--reps", "1", "--dp-rows", "200", "--dp-epochs", "1"],
        r"^ratio Bastion/Presidio texts per second \(held-out\): \d+\.\dx$",
    ),
    "bench_federated.py": (
        ["--rounds", "1", "--reps", "1", "--hidden", "16"],
        r"^ratio SecAgg\+/plain seconds per round: \d+\.\d+x$",
    ),
    "bench_poisoning.py": (
        ["--seeds", "1", "--rates", "0.3", "--attacks", "patients-1-0", "random-patients"],
        r"^ratio Bastion/baseline mean recall: \d+\.\d+x",
    ),
}


def test_every_benchmark_is_listed_here_and_in_make_bench() -> None:
    scripts = sorted(p.name for p in BENCHMARKS.glob("bench_*.py"))
    assert scripts == sorted(TINY)
    makefile = (BENCHMARKS.parent / "Makefile").read_text()
    missing = [name for name in scripts if f"benchmarks/{name}" not in makefile]
    assert not missing, f"not run by make bench: {missing}"


#: The scripts that start a control plane, an agent or a deployment: run by
#: tests/test_benchmarks_deployed.py, so the two halves run on different workers.
DEPLOYED = frozenset({"bench_serve.py", "bench_dispatch.py", "bench_server.py", "bench_cli.py"})


def run_tiny(script: str) -> None:
    """Run ``script`` at its tiny size; it must exit 0 and print its ratio last."""
    arguments, ratio = TINY[script]
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *arguments],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    assert lines and re.search(ratio, lines[-1]), f"the last line is not the ratio:\n{lines[-3:]}"


@pytest.mark.parametrize("script", sorted(set(TINY) - DEPLOYED))
def test_the_benchmark_runs_and_prints_its_ratio(script: str) -> None:
    run_tiny(script)
