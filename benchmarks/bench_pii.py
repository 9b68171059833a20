"""PII scan: Bastion's column scanner versus Presidio's pattern recognizers, doing the same work.

Presidio (``presidio-analyzer``, no NLP model) runs the pattern recognizers of the entities
both scanners support: e-mail, US SSN, phone, credit card, IBAN, IP address, dates (its
DATE_TIME stands for date_of_birth), the national identifiers it has recognizers for
(ES NIF/NIE, IT fiscal code, PL PESEL, FI, SE, UK NHS/NINO, DE tax and social security
ids, CA SIN, IN Aadhaar, TR, ZA, KR) and VAT ids (DE, IT); every recognizer is asked
about every cell, as an analyzer would.

1. Same cells. Both scanners read all rows of every string column of one table, the
   held-out table of ``tests/data/heldout_pii.py`` (mix FINAL, ``--presidio-rows`` rows).
   Bastion reads every row, no sample, in two ways: ``Coverage.EVERY_DETECTOR`` (every
   value through the shape prefilter of every detector, every candidate through its check:
   phonenumbers, python-stdnum, ipaddress, checksums; free-text columns searched inside
   too), the work Presidio does, and ``Coverage.EVERY_ROW`` (a column's scan ends at the
   first detector that classifies it, as in production). Rows/s of each, medians of
   ``--reps`` runs; the ratio printed last is the stricter, EVERY_DETECTOR one.
2. Sampling mode (Bastion's default: a 1,000-row sample per column decides, the whole
   column is counted where needed): rows/s on the reference table (``--rows``), and
   column recall on the held-out tables FINAL and FRESH (seeds and locales kept out of
   development) next to Presidio's on the same tables. Presidio reads every column there
   (numbers as their digits, as Bastion does), and finds a column's entity when at least
   50% of its non-null cells get it, or 2% in a free-text column (mean length 40 or
   more: Bastion's own rule). A decoy column given any entity is a false positive.

    python benchmarks/bench_pii.py [--rows 1000000] [--presidio-rows 2000] [--reps 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the held-out generator

from tests.data.heldout_pii import FINAL, FRESH, TUNING, Mix, Score, heldout, score

from bastion.data.pii import ABSENT, FREE_TEXT_LENGTH, Coverage, scan_frame
from bastion.data.pii.text import column_text
from bastion.data.reference import TABLE_PII_COLUMNS, table

#: Bastion's two ways of reading every cell (no sample).
_FULL = (Coverage.EVERY_DETECTOR, Coverage.EVERY_ROW)
#: Presidio entity -> Bastion entity, for the entities both support.
PRESIDIO = {
    "EMAIL_ADDRESS": "email",
    "US_SSN": "us_ssn",
    "PHONE_NUMBER": "phone",
    "CREDIT_CARD": "card_number",
    "IBAN_CODE": "iban",
    "IP_ADDRESS": "ip_address",
    "DATE_TIME": "date_of_birth",
    **dict.fromkeys(
        [
            "ES_NIF",
            "ES_NIE",
            "IT_FISCAL_CODE",
            "PL_PESEL",
            "FI_PERSONAL_IDENTITY_CODE",
            "SE_PERSONNUMMER",
            "UK_NHS",
            "UK_NINO",
            "DE_TAX_ID",
            "DE_SOCIAL_SECURITY",
            "CA_SIN",
            "IN_AADHAAR",
            "TR_NATIONAL_ID",
            "ZA_ID_NUMBER",
            "KR_RRN",
        ],
        "national_id",
    ),
    "DE_VAT_ID": "vat_number",
    "IT_VAT_CODE": "vat_number",
}
_RECOGNIZERS = [
    "EmailRecognizer",
    "UsSsnRecognizer",
    "PhoneRecognizer",
    "CreditCardRecognizer",
    "IbanRecognizer",
    "IpRecognizer",
    "DateRecognizer",
    "EsNifRecognizer",
    "EsNieRecognizer",
    "ItFiscalCodeRecognizer",
    "PlPeselRecognizer",
    "FiPersonalIdentityCodeRecognizer",
    "SePersonnummerRecognizer",
    "NhsRecognizer",
    "UkNinoRecognizer",
    "DeTaxIdRecognizer",
    "DeSocialSecurityRecognizer",
    "CaSinRecognizer",
    "InAadhaarRecognizer",
    "TrNationalIdRecognizer",
    "ZaIdNumberRecognizer",
    "KrRrnRecognizer",
    "DeVatIdRecognizer",
    "ItVatCodeRecognizer",
]


def _recognizers() -> list[Any]:
    import tldextract
    from presidio_analyzer import predefined_recognizers
    from presidio_analyzer.predefined_recognizers.generic import email_recognizer

    # Presidio validates e-mail domains with tldextract, which would fetch the public
    # suffix list over the network; use the snapshot bundled with tldextract instead.
    offline = tldextract.TLDExtract(suffix_list_urls=())
    vars(email_recognizer)["tldextract"] = types.SimpleNamespace(extract=offline)
    return [getattr(predefined_recognizers, name)() for name in _RECOGNIZERS]


def _cells(frame: pd.DataFrame, column: str) -> list[str]:
    """A column's non-null cells as text, numbers as the digits Bastion reads."""
    text = column_text(frame[column])
    if text is not None:
        return [str(v) for v in text.values.to_pylist()]
    return [str(v) for v in frame[column].dropna()]


def _presidio(
    frame: pd.DataFrame, recognizers: list[Any], strings: list[str]
) -> tuple[float, dict[str, set[str]]]:
    """Seconds spent on the string columns, and the entities of every column (by rule)."""
    wanted = list(PRESIDIO)
    found: dict[str, set[str]] = {}
    elapsed = 0.0
    for column in frame.columns:
        cells = _cells(frame, column)
        counts: Counter[str] = Counter()
        started = time.perf_counter()
        for value in cells:
            kinds = {
                result.entity_type
                for recognizer in recognizers
                for result in recognizer.analyze(value, entities=wanted, nlp_artifacts=None)
            }
            counts.update({PRESIDIO[kind] for kind in kinds if kind in PRESIDIO})
        if column in strings:
            elapsed += time.perf_counter() - started
        free_text = bool(cells) and sum(map(len, cells)) / len(cells) >= FREE_TEXT_LENGTH
        least = ABSENT if free_text else 0.5
        found[column] = {e for e, n in counts.items() if cells and n >= least * len(cells)}
    return elapsed, found


def _bastion_found(frame: pd.DataFrame) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for finding in scan_frame(frame).columns:
        found.setdefault(finding.column, set()).add(finding.entity.value)
    return found


def _strings(frame: pd.DataFrame) -> list[str]:
    numeric = pd.api.types.is_numeric_dtype
    return [str(c) for c in frame.columns if not numeric(frame[c])]


def _same_cells(
    frame: pd.DataFrame, reps: int
) -> tuple[dict[Coverage, float], float, dict[str, set[str]]]:
    """Median seconds of Bastion (each full coverage) and of Presidio on the string columns,
    and Presidio's entities of every column."""
    strings = _strings(frame)
    recognizers = _recognizers()
    # Warm both up untimed (Bastion loads its name lists, Presidio compiles its patterns).
    scan_frame(frame[strings].head(20), coverage=Coverage.EVERY_DETECTOR)
    _presidio(frame.head(5), recognizers, strings)
    bastion: dict[Coverage, list[float]] = {c: [] for c in _FULL}
    presidio_times: list[float] = []
    presidio_found: dict[str, set[str]] = {}
    for _ in range(reps):
        for coverage in _FULL:
            started = time.perf_counter()
            scan_frame(frame[strings], coverage=coverage)
            bastion[coverage].append(time.perf_counter() - started)
        elapsed, presidio_found = _presidio(frame, recognizers, strings)
        presidio_times.append(elapsed)
    medians = {c: statistics.median(times) for c, times in bastion.items()}
    return medians, statistics.median(presidio_times), presidio_found


def _recall_table(results: dict[str, tuple[Score, Score]]) -> bool:
    """Print per-entity column recall; True when Bastion's is at least Presidio's on every
    entity both support, in every table."""
    shared = set(PRESIDIO.values())
    entities = sorted({e for bastion, _ in results.values() for e in bastion.columns})
    header = "".join(f"{f'{m} Bastion':>16} {f'{m} Presidio':>16}" for m in results)
    print(f"{'entity':<15} {'columns':>7}{header}")
    at_least = True
    for entity in entities:
        columns = next(iter(results.values()))[0].columns[entity]
        cells = ""
        for bastion, presidio in results.values():
            theirs = f"{presidio.recall(entity):.2f}" if entity in shared else "-"
            cells += f"{bastion.recall(entity):>16.2f} {theirs:>16}"
            at_least &= entity not in shared or bastion.recall(entity) >= presidio.recall(entity)
        print(f"{entity:<15} {columns:>7}{cells}")
    overall = "".join(f"{b.recall():>16.2f} {p.recall():>16.2f}" for b, p in results.values())
    print(f"{'overall':<15} {'':>7}{overall}")
    flagged = "".join(
        f"{len(b.decoys_flagged):>16} {len(p.decoys_flagged):>16}" for b, p in results.values()
    )
    print(f"{'decoys flagged':<15} {'':>7}{flagged}")
    return at_least


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--presidio-rows", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--mixes",
        default="FINAL,FRESH",
        help="held-out mixes (tests/data/heldout_pii.py); the first is the same-cells table",
    )
    args = parser.parse_args()
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)

    mixes = {"TUNING": TUNING, "FINAL": FINAL, "FRESH": FRESH}
    tables: dict[str, tuple[Mix, pd.DataFrame, dict[str, str | None]]] = {}
    for label in args.mixes.split(","):
        tables[label] = (mixes[label], *heldout(mix=mixes[label], rows=args.presidio_rows))
    first = next(iter(tables))
    final = tables[first][1]
    strings = _strings(final)

    # 1. Same cells.
    bastion_s, presidio_s, presidio_final = _same_cells(final, args.reps)
    rows = len(final)
    print(
        f"1. Same cells: held-out table {first}, {rows:,} rows x {len(strings)} string columns "
        f"({sum(final[c].notna().sum() for c in strings):,} non-null cells); "
        f"medians of {args.reps} runs"
    )
    every_detector, every_row = bastion_s[Coverage.EVERY_DETECTOR], bastion_s[Coverage.EVERY_ROW]
    for label, seconds in (
        ("Bastion, every row x every detector (each candidate checked)", every_detector),
        ("Bastion, every row, a column's scan ends when it is classified", every_row),
        ("Presidio, every cell x every recognizer", presidio_s),
    ):
        print(f"   {label:<64} {rows / seconds:>9,.0f} rows/s  (median {seconds:.2f} s)")
    print(
        f"   ratio, every row x every detector: {presidio_s / every_detector:,.1f}x; "
        f"every row: {presidio_s / every_row:,.1f}x"
    )
    ratio = presidio_s / every_detector

    # 2. Sampling mode.
    frame = table(rows=args.rows, seed=0)
    times = []
    for _ in range(args.reps):
        started = time.perf_counter()
        report = scan_frame(frame)
        times.append(time.perf_counter() - started)
    exact = report.entities() == TABLE_PII_COLUMNS
    print()
    print(f"2. Sampling mode (a 1,000-row sample per column decides; medians of {args.reps})")
    print(
        f"   reference table, {args.rows:,} rows x {frame.shape[1]} columns: "
        f"{args.rows / statistics.median(times):,.0f} rows/s "
        f"(median {statistics.median(times):.2f} s); classified exactly: "
        f"{'yes' if exact else 'NO'}"
    )
    results: dict[str, tuple[Score, Score]] = {}
    for label, (_, heldout_frame, truth) in tables.items():
        if label == first:
            theirs = presidio_final
        else:
            theirs = _presidio(heldout_frame, _recognizers(), [])[1]
        results[label] = (score(_bastion_found(heldout_frame), truth), score(theirs, truth))
    print(
        f"   column recall on the held-out tables ({args.presidio_rows:,} rows, 24 columns, "
        "8 decoys; TUNING is the development mix, the others were kept out of it):"
    )
    at_least = _recall_table(results)
    print(f"   recall at least Presidio's on every shared entity: {'yes' if at_least else 'NO'}")
    print()
    print(
        f"throughput ratio Bastion / Presidio (same cells, rows/s): {ratio:,.1f}x (target >= 50x)"
    )


if __name__ == "__main__":
    main()
