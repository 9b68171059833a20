"""Model-extraction detection per serving key.

- PRADA (Juuti et al., 2019): the distance from each new query to the nearest earlier
  query of the same key and predicted class. A person's queries give roughly normally
  distributed distances; the synthetic, perturbed queries that extraction attacks make
  do not. Exact repeats (a client scoring the same record again) are left out. A
  Shapiro-Wilk statistic below ``delta`` over the recent distances raises.
- Volume: more than ``max_queries`` in the window.
- Coverage: the share of the input space's cells (a grid on the training data's
  principal components) a key has visited. A busy honest client covers much of it too,
  so coverage is exported per key and raises only when ``max_coverage`` is set.

The detector only says what it saw; the server's extraction action (alert, throttle
or block) decides what follows.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import shapiro

__all__ = ["ExtractionDetector", "Finding", "InputGrid"]

#: How often (in queries of one key) the PRADA normality test runs.
TEST_EVERY = 10


@dataclass(frozen=True)
class Finding:
    key_id: str
    reason: str
    queries: int


@dataclass
class InputGrid:
    """Cells of the training inputs' top principal components (quantile bins)."""

    mean: np.ndarray
    components: np.ndarray  # (k, d)
    edges: list[np.ndarray]
    occupied: int

    @classmethod
    def fit(cls, x: np.ndarray, *, components: int = 3, bins: int = 4) -> InputGrid:
        mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        top = vt[: min(components, len(vt))]
        projected = (x - mean) @ top.T
        edges = [
            np.quantile(projected[:, i], np.linspace(0, 1, bins + 1)[1:-1]) for i in range(len(top))
        ]
        grid = cls(mean=mean, components=top, edges=edges, occupied=0)
        grid.occupied = len(set(grid.cells(x)))
        return grid

    def cells(self, x: np.ndarray) -> list[tuple[int, ...]]:
        projected = (x - self.mean) @ self.components.T
        codes = np.stack(
            [np.searchsorted(e, projected[:, i]) for i, e in enumerate(self.edges)], axis=1
        )
        return [tuple(int(v) for v in row) for row in codes]


class _Ring:
    """The last ``size`` queries of one class, as one array (no per-query stacking)."""

    def __init__(self, size: int, width: int) -> None:
        self.rows = np.empty((size, width))
        self.count = 0

    def nearest(self, row: np.ndarray) -> float | None:
        filled = min(self.count, len(self.rows))
        if filled == 0:
            return None
        diff = self.rows[:filled] - row
        return float(np.sqrt(np.einsum("ij,ij->i", diff, diff).min()))

    def add(self, row: np.ndarray) -> None:
        self.rows[self.count % len(self.rows)] = row
        self.count += 1


@dataclass
class _KeyState:
    samples: dict[int, _Ring] = field(default_factory=dict)
    distances: deque[float] = field(default_factory=deque)
    stamps: deque[float] = field(default_factory=deque)
    cells: set[tuple[int, ...]] = field(default_factory=set)
    queries: int = 0
    flagged: str | None = None


class ExtractionDetector:
    def __init__(
        self,
        *,
        grid: InputGrid | None = None,
        delta: float = 0.8,
        min_queries: int = 100,
        window: int = 500,
        memory: int = 1000,
        max_queries: int = 10_000,
        window_seconds: float = 3600.0,
        max_coverage: float | None = None,
    ) -> None:
        self.grid = grid
        self.delta = delta
        self.min_queries = min_queries
        self.window = window
        self.memory = memory
        self.max_queries = max_queries
        self.window_seconds = window_seconds
        self.max_coverage = max_coverage
        self._keys: dict[str, _KeyState] = defaultdict(_KeyState)
        self._lock = threading.Lock()

    def coverage(self, key_id: str) -> float:
        with self._lock:
            state = self._keys.get(key_id)
            if state is None or self.grid is None or not self.grid.occupied:
                return 0.0
            return len(state.cells) / self.grid.occupied

    def flagged(self, key_id: str) -> str | None:
        with self._lock:
            state = self._keys.get(key_id)
            return state.flagged if state else None

    def observe(self, key_id: str, x: np.ndarray, predicted: np.ndarray) -> Finding | None:
        """Record a batch of queries; return a finding the first time a key trips."""
        flat = x.reshape(len(x), -1).astype(np.float64)
        now = time.monotonic()
        with self._lock:
            state = self._keys[key_id]
            for row, label in zip(flat, predicted.tolist(), strict=True):
                ring = state.samples.get(label)
                if ring is None:
                    ring = state.samples[label] = _Ring(self.memory, flat.shape[1])
                nearest = ring.nearest(row)
                if nearest == 0.0:  # an exact repeat teaches a thief nothing: not counted
                    state.stamps.append(now)
                    continue
                if nearest is not None:
                    state.distances.append(nearest)
                    if len(state.distances) > self.window:
                        state.distances.popleft()
                ring.add(row)
                state.stamps.append(now)
            state.queries += len(flat)
            while state.stamps and state.stamps[0] < now - self.window_seconds:
                state.stamps.popleft()
            if self.grid is not None:
                state.cells.update(self.grid.cells(flat))
            if state.flagged is not None:
                return None
            reason = self._reason(state, batch=len(flat))
            if reason is None:
                return None
            state.flagged = reason
            return Finding(key_id=key_id, reason=reason, queries=state.queries)

    def _reason(self, state: _KeyState, *, batch: int) -> str | None:
        if len(state.stamps) > self.max_queries:
            return f"{len(state.stamps)} queries within {self.window_seconds:.0f} s"
        # The normality test every TEST_EVERY new distances, not on every query.
        crossed = state.queries // TEST_EVERY != (state.queries - batch) // TEST_EVERY
        if len(state.distances) >= self.min_queries and crossed:
            statistic = float(shapiro(np.asarray(state.distances)).statistic)
            if statistic < self.delta:
                return (
                    f"query distances are not those of natural inputs (PRADA: Shapiro-Wilk "
                    f"{statistic:.2f} < {self.delta})"
                )
        if self.max_coverage is not None and self.grid is not None and self.grid.occupied:
            coverage = len(state.cells) / self.grid.occupied
            if coverage > self.max_coverage and state.queries >= self.min_queries:
                return f"queries cover {coverage:.0%} of the input space"
        return None
