"""Column-level PII detection, vectorised, that never copies the values it finds.

Each column is tested on a sample against every detector (:mod:`.detectors`): a cheap
shape prefilter in pyarrow's regex engine over every value, then the field's libraries
(``phonenumbers``, ``python-stdnum``, :mod:`ipaddress`) or a vectorised checksum on the
candidates. A clear answer classifies the column; an ambiguous one is settled on the
whole column (read again chunk by chunk when too large to hold); a weak one is reported
apart as a suspect. Long free-text columns are searched inside. The report holds entity
types, confidences and counts: never a value.

Modules: ``scan`` (the decision), ``detectors`` (one per entity), ``report`` (what is
reported), ``text`` (columns as Arrow text), ``phones``, ``formats``, ``dates``,
``checksums`` and ``lexicon`` (the checks). Imports nothing outside ``bastion.data.pii``.
"""

from bastion.data.pii.detectors import ABSENT, CLASSIFY
from bastion.data.pii.report import ColumnFinding, Entity, PiiReport
from bastion.data.pii.scan import (
    FREE_TEXT_LENGTH,
    Coverage,
    scan_chunks,
    scan_frame,
    scan_series,
)

__all__ = [
    "ABSENT",
    "CLASSIFY",
    "FREE_TEXT_LENGTH",
    "ColumnFinding",
    "Coverage",
    "Entity",
    "PiiReport",
    "scan_chunks",
    "scan_frame",
    "scan_series",
]
