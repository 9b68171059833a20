"""What a PII scan reports: entity types, confidences and counts per column, never a value."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["ColumnFinding", "Entity", "PiiReport"]


class Entity(enum.StrEnum):
    """What a column holds. The values are stable: reports and policies store them."""

    EMAIL = "email"
    PHONE = "phone"
    US_SSN = "us_ssn"
    CARD_NUMBER = "card_number"
    IBAN = "iban"
    IP_ADDRESS = "ip_address"
    DATE_OF_BIRTH = "date_of_birth"
    PERSON = "person"
    ADDRESS = "address"
    #: a national person identifier other than the US SSN (PESEL, NIR, codice fiscale ...)
    NATIONAL_ID = "national_id"
    #: an EU (or other stdnum-known) VAT number: identifies a business, or a sole trader
    VAT_NUMBER = "vat_number"
    #: unique codes of one fixed shape that point at a person's record (MRN-00123456)
    RECORD_NUMBER = "record_number"


@dataclass
class ColumnFinding:
    """One entity in one column. ``suspect``: too weak to classify the column (a share
    between :data:`~bastion.data.pii.scan.ABSENT` and the classifying share, or a profile
    that fits the entity only loosely); a reviewer, or a cautious pseudonymisation, decides."""

    column: str
    entity: Entity
    confidence: float
    matched: int
    rows: int
    free_text: bool = False
    suspect: bool = False

    def summary(self) -> dict[str, object]:
        return {
            "column": self.column,
            "entity": self.entity.value,
            "confidence": round(self.confidence, 4),
            "matched": self.matched,
            "free_text": self.free_text,
            "suspect": self.suspect,
        }


@dataclass
class PiiReport:
    """Confident findings in ``columns`` (what callers treat as identifiers), suspects
    apart in ``suspects``: a column appears in at most one of the two lists."""

    columns: list[ColumnFinding] = field(default_factory=list)
    rows: int = 0
    suspects: list[ColumnFinding] = field(default_factory=list)

    def add(self, findings: Iterable[ColumnFinding]) -> None:
        """File findings of one column where they belong (confident or suspect)."""
        for finding in findings:
            (self.suspects if finding.suspect else self.columns).append(finding)

    def entities(self) -> dict[str, str]:
        """Column -> entity of the confident findings (the last, for free text)."""
        return {f.column: f.entity.value for f in self.columns}

    def suspected(self) -> dict[str, str]:
        """Column -> entity of the suspects."""
        return {f.column: f.entity.value for f in self.suspects}

    def summary(self) -> dict[str, object]:
        """What may leave the compute plane: types, confidences, counts; never values."""
        return {
            "rows": self.rows,
            "columns": [f.summary() for f in self.columns],
            "suspects": [f.summary() for f in self.suspects],
        }
