"""Column-level PII scan: a sample decides, the whole column is counted where needed.

Each column's sample goes through every detector in turn (:mod:`.detectors`): the shape
prefilter over all sampled values, the fitted check over the candidates. The first
detector that covers :data:`CLASSIFY` of the sample classifies the column; a share
just below that (:data:`SETTLE`) is settled on the whole column, and a column that stays
below is reported as a *suspect* of the entity it came closest to (from a share of
:data:`~bastion.data.pii.detectors.SUSPECT`). Long free text is
searched inside instead, and every entity found in enough rows is reported.

Counts on a whole column are exact where the check is vectorised; per-value checks (the
libraries) run on at most :data:`CHECK_CAP` candidates drawn uniformly, and their share
is applied to all candidates. :class:`Coverage` widens the scan for audits and benchmarks:
every row instead of a sample, and every detector instead of stopping at the first that
classifies the column.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from bastion.data.pii.detectors import ABSENT, DETECTORS, SUSPECT, Detector, Fitted
from bastion.data.pii.report import ColumnFinding, Entity, PiiReport
from bastion.data.pii.text import Text, column_text

__all__ = ["CHECK_CAP", "FREE_TEXT_LENGTH", "Coverage", "scan_chunks", "scan_frame", "scan_series"]


class Coverage(enum.StrEnum):
    """How much of each column a scan reads."""

    #: a uniform sample decides; the whole column is read for the counts the decision needs
    SAMPLE = "sample"
    #: every value decides (no sample); the first detector that classifies the column ends it
    EVERY_ROW = "every-row"
    #: every value through every detector, every candidate checked: a per-cell scanner's work
    EVERY_DETECTOR = "every-detector"


#: Mean length from which a column is treated as free text.
FREE_TEXT_LENGTH = 40
#: Per-value checks of a whole column look at most at this many candidates.
CHECK_CAP = 10_000
#: A sample share this close below the classifying one is settled on the whole column
#: (further below, a uniform sample of 1,000 rows leaves no doubt: a suspect at most).
SETTLE = 0.1
#: Integers below this (counts, codes) cannot be card, SSN or phone numbers.
_SMALL = 10**8


class _Reservoir:
    """A uniform sample of at most ``size`` values of a stream of arrays."""

    def __init__(self, size: int, seed: int) -> None:
        self._size, self._rng = size, np.random.default_rng(seed)
        self._values: pa.Array | None = None
        self._keys = np.zeros(0)
        self.seen = 0

    def add(self, values: pa.Array) -> None:
        self.seen += len(values)
        keys = np.concatenate([self._keys, self._rng.random(len(values))])
        merged = values if self._values is None else pa.concat_arrays([self._values, values])
        if len(keys) > self._size:
            keep = np.argpartition(keys, self._size)[: self._size]
            merged, keys = merged.take(pa.array(keep)), keys[keep]
        self._values, self._keys = merged, keys

    def share(self, count: Callable[[pa.Array], int]) -> float:
        return (
            count(self._values) / len(self._values)
            if self._values is not None and len(self._values)
            else 0.0
        )


class _Column:
    """A column's non-null values as text, counted whole: held in memory, or read again in
    chunks for each count (a column too large to hold)."""

    def __init__(
        self, texts: Callable[[], Iterable[pa.Array]], *, seed: int, rows: int | None = None
    ) -> None:
        self._texts, self._seed = texts, seed
        self._rows = rows

    @property
    def known_rows(self) -> int | None:
        return self._rows

    @property
    def rows(self) -> int:
        if self._rows is None:
            self._rows = sum(len(text) for text in self._texts())
        return self._rows

    def count(self, detector: Detector, fitted: Fitted, *, numeric: bool) -> int:
        """Values of the whole column that are the entity (estimated past the cap)."""
        exact, rows = 0, 0
        reservoir = _Reservoir(CHECK_CAP, self._seed)
        for text in self._texts():
            rows += len(text)
            candidates = text.filter(pa.array(detector.shaped(text, numeric=numeric)))
            if fitted.vectorised:
                exact += int(fitted.check(candidates).sum())
            else:
                reservoir.add(candidates)
        self._rows = rows
        if fitted.vectorised:
            return exact
        return round(reservoir.seen * reservoir.share(lambda v: int(fitted.check(v).sum())))

    def count_inside(self, detector: Detector) -> int:
        """Free-text values of the whole column that hold the entity (estimated past the cap)."""
        reservoir = _Reservoir(CHECK_CAP, self._seed)
        for text in self._texts():
            reservoir.add(text)
        self._rows = reservoir.seen

        def inside(values: pa.Array) -> int:
            found = detector.inside(values)
            return 0 if found is None else int(found.sum())

        return round(reservoir.seen * reservoir.share(inside))


@dataclass(frozen=True)
class _Scan:
    name: str
    sample: int
    seed: int
    coverage: Coverage


def _finding(scan: _Scan, entity: Entity, matched: int, rows: int, **flags: bool) -> ColumnFinding:
    return ColumnFinding(
        column=scan.name,
        entity=entity,
        confidence=matched / rows if rows else 0.0,
        matched=matched,
        rows=rows,
        **flags,
    )


def _structured(scan: _Scan, sampled: pa.Array, text: Text, column: _Column) -> list[ColumnFinding]:
    n = len(sampled)
    complete = column.known_rows == n  # the sample is the whole column
    found: ColumnFinding | None = None
    suspect: ColumnFinding | None = None
    for detector in DETECTORS:
        shaped = detector.shaped(sampled, numeric=text.numeric)
        if shaped.sum() < ABSENT * n:
            continue
        candidates = sampled.filter(pa.array(shaped))
        fitted = detector.fit(candidates, numeric=text.numeric, rows=lambda: column.rows)
        if fitted is None:
            continue
        matched, rows = int(fitted.check_fitted(candidates).sum()), n
        if matched < ABSENT * n:
            continue
        near = matched >= (fitted.classify_at - SETTLE) * n
        if near and not complete and not fitted.suspect_only:  # settle, and count, on all rows
            matched, rows = column.count(detector, fitted, numeric=text.numeric), column.rows
        confident = not fitted.suspect_only and matched >= fitted.classify_at * rows
        if confident and found is None:
            found = _finding(scan, detector.entity, matched, rows)
            if scan.coverage is not Coverage.EVERY_DETECTOR:
                break  # a column holds one kind of identifier; the first confident one wins
        elif (
            found is None
            and matched >= SUSPECT * rows
            and (suspect is None or matched / rows > suspect.confidence)
        ):
            suspect = _finding(scan, detector.entity, matched, rows, suspect=True)
    if found is not None:
        return [found]
    return [suspect] if suspect is not None else []


def _free_text(scan: _Scan, sampled: pa.Array, column: _Column) -> list[ColumnFinding]:
    findings = []
    n = len(sampled)
    for detector in DETECTORS:
        inside = detector.inside(sampled)
        if inside is None or inside.sum() < ABSENT * n:
            continue
        matched, rows = int(inside.sum()), n
        if column.known_rows != n:
            matched, rows = column.count_inside(detector), column.rows
        suspect = detector.entity is Entity.PERSON  # names in prose: for a reviewer
        findings.append(
            _finding(scan, detector.entity, matched, rows, free_text=True, suspect=suspect)
        )
    return findings


def _classify(scan: _Scan, text: Text, column: _Column) -> list[ColumnFinding]:
    values = text.values
    if len(values) == 0:
        return []
    if scan.coverage is not Coverage.SAMPLE or len(values) <= scan.sample:
        sampled = values
    else:
        rng = np.random.default_rng(scan.seed)
        sampled = values.take(
            pa.array(np.sort(rng.choice(len(values), scan.sample, replace=False)))
        )
    findings = _structured(scan, sampled, text, column)
    long = float(pc.mean(pc.utf8_length(sampled)).as_py() or 0) >= FREE_TEXT_LENGTH
    if not long or text.numeric or any(not f.suspect for f in findings):
        return findings  # long values can be one entity each (addresses)
    return _free_text(scan, sampled, column)


def _small_integers(texts: Iterable[Text | None]) -> bool:
    """A numeric column whose values all stay below 10^8 (counts, codes, amounts)."""
    for text in texts:
        if text is None or not text.numeric:
            return False
        longest = pc.max(pc.utf8_length(pc.utf8_ltrim(text.values, characters="-"))).as_py()
        if longest is not None and longest > len(str(_SMALL)) - 1:
            return False
    return True


def scan_series(
    name: str,
    series: pd.Series,
    *,
    sample: int = 1000,
    seed: int = 0,
    suspects: bool = False,
    coverage: Coverage = Coverage.SAMPLE,
) -> list[ColumnFinding]:
    """Findings for one column (empty when it holds no recognised identifiers): at most
    one for a structured column, one per entity for free text. ``suspects``: include the
    findings too weak to classify the column (``suspect=True``); :meth:`PiiReport.add`
    files them apart."""
    text = column_text(series)
    if text is None or _small_integers([text]):
        return []
    column = _Column(lambda: [text.values], seed=seed, rows=len(text.values))
    found = _classify(_Scan(name, sample, seed, coverage), text, column)
    return found if suspects else [f for f in found if not f.suspect]


def scan_chunks(
    name: str,
    chunks: Callable[[], Iterable[pd.Series]],
    *,
    sample: pd.Series,
    sample_size: int = 1000,
    seed: int = 0,
    suspects: bool = False,
) -> list[ColumnFinding]:
    """:func:`scan_series` for a column too large to hold, read in chunks: each call of
    ``chunks`` reads it once, in order, each chunk with the dtype of the whole column.
    ``sample`` (a uniform sample of its rows, with that dtype) decides, as the sample of
    :func:`scan_series` does; only the counts the decision needs read the whole column.
    """
    text = column_text(sample)
    if text is None or (text.numeric and _small_integers(column_text(c) for c in chunks())):
        return []

    def texts() -> Iterator[pa.Array]:
        for chunk in chunks():
            part = column_text(chunk)
            if part is not None:
                yield part.values

    column = _Column(texts, seed=seed)
    found = _classify(_Scan(name, sample_size, seed, Coverage.SAMPLE), text, column)
    return found if suspects else [f for f in found if not f.suspect]


def scan_frame(
    frame: pd.DataFrame,
    *,
    sample: int = 1000,
    seed: int = 0,
    suspects: bool = False,
    coverage: Coverage = Coverage.SAMPLE,
) -> PiiReport:
    """Every column of ``frame``: confident findings in ``columns``; with ``suspects``,
    the weak ones in ``suspects`` (off by default, as for :func:`scan_chunks`, so that a
    table scanned in memory and the same table scanned from its file report alike)."""
    report = PiiReport(rows=len(frame))
    for name in frame.columns:
        report.add(
            scan_series(
                str(name),
                frame[name],
                sample=sample,
                seed=seed,
                suspects=suspects,
                coverage=coverage,
            )
        )
    return report
