"""Drift monitoring against the training distribution, and the metrics endpoint."""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np

from bastion.inference.monitor import DriftMonitor, psi
from tests.inference.conftest import Running, Workload, make_state, mint_key


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=5000)
    edges = np.quantile(reference, np.linspace(0, 1, 11)[1:-1])
    assert psi(reference, rng.normal(size=2000), edges) < 0.02
    assert psi(reference, rng.normal(loc=1.0, size=2000), edges) > 0.25


def test_a_shifted_feature_raises_one_drift_finding_until_it_recovers() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(3000, 2))
    monitor = DriftMonitor(reference, names=["a", "b"], window=200, every=100)
    monitor.observe(rng.normal(size=(200, 2)))
    assert monitor.evaluate() == []
    shifted = np.column_stack([rng.normal(loc=2.0, size=200), rng.normal(size=200)])
    monitor.observe(shifted)
    found = monitor.evaluate()
    assert [f.feature for f in found] == ["a"] and found[0].psi > 0.25 and found[0].ks > 0.3
    monitor.observe(shifted)
    assert monitor.evaluate() == []  # already alerting: not raised twice
    assert monitor.latest["b"][0] < 0.25


def test_shifted_requests_are_reported_and_exported_as_metrics(
    patients_workload: Workload, serve: Any
) -> None:
    token, record = mint_key(("predict", "metrics"))
    state, _, reports = make_state(patients_workload, records=[record])
    running: Running = serve(state)
    frame = patients_workload.frame.drop(columns=["diagnosis"])  # type: ignore[attr-defined]
    rows = frame.iloc[patients_workload.test_rows].to_dict(orient="records")
    top = float(frame["mean_radius"].max())
    shifted = [{**row, "mean_radius": top} for row in rows]  # every request at the extreme
    bearer = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=running.url, timeout=30) as http:
        for start in range(0, 120, 20):
            response = http.post(
                "/v1/predict", json={"instances": shifted[start : start + 20]}, headers=bearer
            )
            assert response.status_code == 200
        deadline = time.monotonic() + 10
        while not any(kind == "drift" for kind, _ in reports) and time.monotonic() < deadline:
            time.sleep(0.2)  # statistics are recomputed off the request path
        metrics = http.get("/metrics", headers=bearer)
    drift = [details for kind, details in reports if kind == "drift"]
    assert any(d["feature"] == "mean_radius" and d["psi"] > 0.25 for d in drift)
    assert metrics.status_code == 200
    assert 'bastion_serve_drift_psi{feature="mean_radius"}' in metrics.text
    assert 'bastion_serve_requests_total{endpoint="predict",outcome="200"} 6.0' in metrics.text
