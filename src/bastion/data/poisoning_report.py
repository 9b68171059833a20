"""What a label scan found: per-row findings, which stay in the compute plane, and the
summary that may leave it, which holds only counts per (given, suspected) class pair."""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict

from bastion.data.poisoning_trigger import Trigger

__all__ = ["Finding", "Label", "LabelIssues", "LabelScanSummary", "PairCount", "Reason"]

#: A class as the summary names it: integer labels stay integers, any other becomes text.
Label = int | str


class Reason(enum.StrEnum):
    """Why a row was flagged; a row has one, the most specific that applies."""

    LABEL = "label"  # out-of-sample evidence points to another class
    CONFLICTING_DUPLICATE = "conflicting-duplicate"  # an identical row carries another label
    TRIGGER = "trigger"  # carries a patch and looks like another class without it


@dataclass(frozen=True)
class Finding:
    """One flagged row (compute plane only)."""

    row: int
    given: Label
    suspected: Label
    reason: Reason


class PairCount(BaseModel):
    """Rows labelled ``given`` that look like ``suspected``, by reason."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    given: Label
    suspected: Label
    count: int
    reasons: dict[Reason, int]


class LabelScanSummary(BaseModel):
    """What leaves the compute plane: counts, never row indices or values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows_scanned: int
    count: int
    rate: float
    pairs: list[PairCount]
    triggers: int  # confirmed patches
    conflicting_duplicate_groups: int


def _label_value(value: object) -> Label:
    """A class as JSON names it (numpy scalars unwrapped; bools and floats as text)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return str(value)


@dataclass(frozen=True)
class LabelIssues:
    """Rows whose given label the data disagrees with.

    ``indices``, ``given``, ``suspected`` and ``reasons`` are aligned (one entry per
    flagged row, rows ascending); ``quality`` is per scanned row: the out-of-sample
    support for its given label, 0 to 1. Row indices stay in the compute plane; send
    :meth:`summary` across.
    """

    indices: np.ndarray
    given: np.ndarray
    suspected: np.ndarray
    reasons: np.ndarray
    quality: np.ndarray = field(repr=False)
    triggers: tuple[Trigger, ...] = ()
    conflicting_duplicate_groups: int = 0

    @property
    def count(self) -> int:
        return len(self.indices)

    @property
    def rows_scanned(self) -> int:
        return len(self.quality)

    def findings(self) -> list[Finding]:
        """Per flagged row: its index, given label, suspected class and reason."""
        return [
            Finding(
                row=int(row),
                given=_label_value(given),
                suspected=_label_value(suspected),
                reason=Reason(reason),
            )
            for row, given, suspected, reason in zip(
                self.indices, self.given, self.suspected, self.reasons, strict=True
            )
        ]

    def pair_counts(self) -> list[PairCount]:
        """Flagged rows per (given, suspected) class pair, most first."""
        by_pair: dict[tuple[Label, Label], Counter[Reason]] = {}
        for finding in self.findings():
            pair = (finding.given, finding.suspected)
            by_pair.setdefault(pair, Counter())[finding.reason] += 1
        pairs = [
            PairCount(
                given=given,
                suspected=suspected,
                count=sum(reasons.values()),
                reasons=dict(sorted(reasons.items())),
            )
            for (given, suspected), reasons in by_pair.items()
        ]
        return sorted(pairs, key=lambda p: (-p.count, str(p.given), str(p.suspected)))

    def summary(self) -> LabelScanSummary:
        """Counts per class pair; ``summary().model_dump(mode="json")`` is what may leave."""
        return LabelScanSummary(
            rows_scanned=self.rows_scanned,
            count=self.count,
            rate=round(self.count / self.rows_scanned, 4),
            pairs=self.pair_counts(),
            triggers=len(self.triggers),
            conflicting_duplicate_groups=self.conflicting_duplicate_groups,
        )
