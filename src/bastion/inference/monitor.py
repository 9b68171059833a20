"""Drift monitoring and the server's Prometheus metrics.

The training inputs are the reference. The last ``window`` request rows are compared
with it per model input: the population stability index over the reference's decile
bins, and the two-sample Kolmogorov-Smirnov statistic. A PSI above ``psi_alert``
(0.25, the usual "significant shift") raises a drift finding once, until it recovers.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from scipy.stats import ks_2samp

__all__ = ["DriftFinding", "DriftMonitor", "ServeMetrics", "input_names", "psi"]

_EPS = 1e-4


def psi(reference: np.ndarray, current: np.ndarray, edges: np.ndarray) -> float:
    """Population stability index of ``current`` against ``reference`` on ``edges``."""
    ref = np.bincount(np.searchsorted(edges, reference), minlength=len(edges) + 1) / len(reference)
    cur = np.bincount(np.searchsorted(edges, current), minlength=len(edges) + 1) / len(current)
    ref, cur = np.clip(ref, _EPS, None), np.clip(cur, _EPS, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def input_names(numeric: list[str], categorical: dict[str, list[str]], width: int) -> list[str]:
    names = list(numeric) + [f"{c}={v}" for c, values in categorical.items() for v in values]
    return names if len(names) == width else [f"input[{i}]" for i in range(width)]


@dataclass(frozen=True)
class DriftFinding:
    feature: str
    psi: float
    ks: float


class DriftMonitor:
    def __init__(
        self,
        reference: np.ndarray,
        *,
        names: list[str],
        window: int = 500,
        every: int = 100,
        psi_alert: float = 0.25,
    ) -> None:
        self.reference = reference
        self.names = names
        self.edges = [
            np.unique(np.quantile(reference[:, i], np.linspace(0, 1, 11)[1:-1]))
            for i in range(reference.shape[1])
        ]
        self.window: deque[np.ndarray] = deque(maxlen=window)
        self.every = every
        self.psi_alert = psi_alert
        self.latest: dict[str, tuple[float, float]] = {}
        self._alerting: set[str] = set()
        self._since = 0
        self._lock = threading.Lock()

    def observe(self, rows: np.ndarray) -> None:
        """Add request rows (cheap: the statistics are computed off the request path)."""
        with self._lock:
            self.window.extend(rows)
            self._since += len(rows)

    def evaluate(self) -> list[DriftFinding]:
        """Recompute when ``every`` new rows arrived; return features newly over the line."""
        with self._lock:
            if self._since < self.every or len(self.window) < self.every:
                return []
            self._since = 0
            current = np.stack(self.window)
        found = []
        latest = {}
        for i, name in enumerate(self.names):
            value = psi(self.reference[:, i], current[:, i], self.edges[i])
            ks = float(ks_2samp(self.reference[:, i], current[:, i]).statistic)
            latest[name] = (value, ks)
            if value > self.psi_alert and name not in self._alerting:
                found.append(DriftFinding(feature=name, psi=value, ks=ks))
        with self._lock:
            self.latest = latest
            self._alerting = {n for n, (v, _) in latest.items() if v > self.psi_alert}
        return found


class ServeMetrics:
    """The server's own registry (scraped at /metrics with the metrics scope)."""

    def __init__(self) -> None:
        self._counted: dict[tuple[str, str], Any] = {}
        self._timed: dict[str, Any] = {}
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bastion_serve_requests",
            "Requests by endpoint and outcome",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.instances = Counter(
            "bastion_serve_instances", "Instances predicted", registry=self.registry
        )
        self.flagged = Counter(
            "bastion_serve_flagged",
            "Instances flagged as out of distribution or adversarial",
            registry=self.registry,
        )
        self.latency = Histogram(
            "bastion_serve_latency_seconds",
            "Request latency in the server",
            ["endpoint"],
            registry=self.registry,
        )
        self.drift_psi = Gauge(
            "bastion_serve_drift_psi",
            "PSI of each input against training",
            ["feature"],
            registry=self.registry,
        )
        self.drift_ks = Gauge(
            "bastion_serve_drift_ks",
            "KS statistic of each input against training",
            ["feature"],
            registry=self.registry,
        )
        self.extraction = Counter(
            "bastion_serve_extraction_findings",
            "Keys flagged for model extraction",
            registry=self.registry,
        )
        self.spooled = Gauge(
            "bastion_serve_audit_spooled",
            "Audit events waiting in the local spool",
            registry=self.registry,
        )

    def count(self, endpoint: str, outcome: str) -> None:
        child = self._counted.get((endpoint, outcome))
        if child is None:  # label lookups cost more than the increment: keep the children
            child = self._counted[endpoint, outcome] = self.requests.labels(
                endpoint=endpoint, outcome=outcome
            )
        child.inc()

    def observe(self, endpoint: str, seconds: float) -> None:
        child = self._timed.get(endpoint)
        if child is None:
            child = self._timed[endpoint] = self.latency.labels(endpoint=endpoint)
        child.observe(seconds)

    def drift(self, latest: dict[str, tuple[float, float]]) -> None:
        for name, (value, ks) in latest.items():
            self.drift_psi.labels(feature=name).set(value)
            self.drift_ks.labels(feature=name).set(ks)
