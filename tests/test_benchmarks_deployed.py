"""The benchmarks that start a control plane, an agent or a deployment, at a tiny size (the
rest are in tests/test_benchmarks.py; split so they run on different workers)."""

from __future__ import annotations

import pytest

from tests.test_benchmarks import DEPLOYED, run_tiny

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script", sorted(DEPLOYED))
def test_the_deployed_benchmark_runs_and_prints_its_ratio(script: str) -> None:
    run_tiny(script)
