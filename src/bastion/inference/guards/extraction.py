"""Model-extraction detection per serving key and per owner (all keys one person minted).

- PRADA (Juuti et al., 2019): the distance from each new query to the nearest earlier
  query of the same key and predicted class. A person's queries give roughly normally
  distributed distances; the synthetic, perturbed queries that extraction attacks make
  do not. Exact repeats (a client scoring the same record again) are left out. A
  Shapiro-Wilk statistic below ``delta`` over the recent distances raises.
- Volume: more than ``max_queries`` in the window.
- Out-of-distribution share: of the last ``ood_window`` queries, more than ``max_ood_share``
  flagged by the input detector. Natural traffic is flagged at about the detector's
  calibrated rate (``ood_fpr``, 2% by default); a thief querying random in-schema inputs,
  or natural rows mixed with random ones, far above it.
- Coverage: the share of the input space's cells (a grid on the training data's
  principal components) a key has visited. A busy honest client covers much of it too,
  so coverage is exported per key and raises only when ``max_coverage`` is set.

Every signal is kept twice: per key, and per owner (``owner:<id>``), so a thief spreading
its queries over several keys is judged on all of them; a flagged owner flags all its keys.

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
    #: The last queries' out-of-distribution flags (1 flagged, 0 not).
    ood: deque[int] = field(default_factory=deque)
    distances: deque[float] = field(default_factory=deque)
    stamps: deque[float] = field(default_factory=deque)
    cells: set[tuple[int, ...]] = field(default_factory=set)
    queries: int = 0
    flagged: str | None = None


def _owner(owner: str) -> str:
    return f"owner:{owner}"


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
        max_ood_share: float = 0.15,
        ood_window: int = 200,
        min_ood_queries: int = 50,
    ) -> None:
        self.grid = grid
        self.delta = delta
        self.min_queries = min_queries
        self.window = window
        self.memory = memory
        self.max_queries = max_queries
        self.window_seconds = window_seconds
        self.max_coverage = max_coverage
        self.max_ood_share = max_ood_share
        self.ood_window = ood_window
        self.min_ood_queries = min_ood_queries
        self._keys: dict[str, _KeyState] = defaultdict(_KeyState)
        self._lock = threading.Lock()

    def coverage(self, key_id: str) -> float:
        with self._lock:
            state = self._keys.get(key_id)
            if state is None or self.grid is None or not self.grid.occupied:
                return 0.0
            return len(state.cells) / self.grid.occupied

    def flagged(self, key_id: str, owner: str | None = None) -> str | None:
        """Why the key, or its owner's keys together, were flagged; None when neither was."""
        with self._lock:
            for subject in (key_id, *((_owner(owner),) if owner else ())):
                state = self._keys.get(subject)
                if state is not None and state.flagged is not None:
                    return state.flagged
            return None

    def observe(
        self,
        key_id: str,
        x: np.ndarray,
        predicted: np.ndarray,
        *,
        owner: str | None = None,
        ood: np.ndarray | None = None,
    ) -> Finding | None:
        """Record a batch of queries of ``key_id`` (minted by ``owner``), with the input
        detector's flags; return a finding the first time the key or its owner trips."""
        flat = x.reshape(len(x), -1).astype(np.float64)
        flags = np.zeros(len(flat), dtype=bool) if ood is None else np.asarray(ood, dtype=bool)
        found = None
        for subject in (key_id, *((_owner(owner),) if owner else ())):
            finding = self._observe(subject, flat, predicted, flags)
            found = found or finding
        return found

    def _observe(
        self, subject: str, flat: np.ndarray, predicted: np.ndarray, flags: np.ndarray
    ) -> Finding | None:
        now = time.monotonic()
        with self._lock:
            state = self._keys[subject]
            for row, label, is_ood in zip(flat, predicted.tolist(), flags.tolist(), strict=True):
                state.ood.append(int(is_ood))
                if len(state.ood) > self.ood_window:
                    state.ood.popleft()
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
            return Finding(key_id=subject, reason=reason, queries=state.queries)

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
        if len(state.ood) >= self.min_ood_queries:
            share = sum(state.ood) / len(state.ood)
            if share > self.max_ood_share:
                return (
                    f"{share:.0%} of the last {len(state.ood)} queries were out of "
                    f"distribution (more than {self.max_ood_share:.0%})"
                )
        if self.max_coverage is not None and self.grid is not None and self.grid.occupied:
            coverage = len(state.cells) / self.grid.occupied
            if coverage > self.max_coverage and state.queries >= self.min_queries:
                return f"queries cover {coverage:.0%} of the input space"
        return None
