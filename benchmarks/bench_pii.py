"""PII scan of the reference table: Bastion's column scanner versus Presidio's pattern recognizers.

Both sides look at the same rows of ``bastion.data.reference.table`` (10^6 rows by
default: 8 float features, a category, a target and six PII columns whose ground
truth the generator knows).

* Bastion: ``scan_frame`` over every column of the whole table (a sample per column
  first, the whole column when needed, vectorised with pyarrow).
* Presidio (``presidio-analyzer``, no NLP model): its pattern recognizers for email,
  US SSN, phone, credit card, IBAN and IP address, each asked about every cell of the
  string columns, as an analyzer would. Presidio runs on a random sample of rows
  (``--presidio-rows``) because a full pass takes hours; its rows/s is measured on
  that sample and the output says so.

Precision and recall are per entity at cell level: a cell of an entity's column counts
as found when the scanner attributes that entity to it (Bastion: the rows its detector
matched in a column it classified as that entity; Presidio: any result of that type).
A detection of the entity in another column is a false positive.

    python benchmarks/bench_pii.py [--rows 1000000] [--presidio-rows 5000] [--reps 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import types
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from bastion.data.pii import scan_frame
from bastion.data.reference import TABLE_PII_COLUMNS, table

#: Presidio entity names for the entities both scanners support.
PRESIDIO = {
    "email": "EMAIL_ADDRESS",
    "us_ssn": "US_SSN",
    "phone": "PHONE_NUMBER",
    "card_number": "CREDIT_CARD",
    "iban": "IBAN_CODE",
    "ip_address": "IP_ADDRESS",
}


def _recognizers() -> list[Any]:
    import tldextract
    from presidio_analyzer.predefined_recognizers.generic import email_recognizer

    # Presidio validates e-mail domains with tldextract, which would fetch the public
    # suffix list over the network; use the snapshot bundled with tldextract instead.
    offline = tldextract.TLDExtract(suffix_list_urls=())
    vars(email_recognizer)["tldextract"] = types.SimpleNamespace(extract=offline)
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    return [
        EmailRecognizer(),
        UsSsnRecognizer(),
        PhoneRecognizer(),
        CreditCardRecognizer(),
        IbanRecognizer(),
        IpRecognizer(),
    ]


def _bastion(frame: pd.DataFrame) -> tuple[float, dict[str, Counter[str]]]:
    started = time.perf_counter()
    report = scan_frame(frame)
    elapsed = time.perf_counter() - started
    counts: dict[str, Counter[str]] = {entity: Counter() for entity in PRESIDIO}
    truth = {column: entity for column, entity in TABLE_PII_COLUMNS.items()}
    for finding in report.columns:
        entity = finding.entity.value
        if entity not in counts:
            continue
        kind = "tp" if truth.get(finding.column) == entity else "fp"
        counts[entity][kind] += finding.matched
    return elapsed, counts


def _presidio(frame: pd.DataFrame) -> tuple[float, dict[str, Counter[str]]]:
    recognizers = _recognizers()
    wanted = list(PRESIDIO.values())
    columns = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    found: dict[str, Counter[str]] = {entity: Counter() for entity in PRESIDIO}
    back = {name: entity for entity, name in PRESIDIO.items()}
    started = time.perf_counter()
    for column in columns:
        for value in frame[column].astype(str):
            types = {
                result.entity_type
                for recognizer in recognizers
                for result in recognizer.analyze(value, entities=wanted, nlp_artifacts=None)
            }
            for name in types:
                entity = back[name]
                found[entity]["tp" if TABLE_PII_COLUMNS.get(column) == entity else "fp"] += 1
    return time.perf_counter() - started, found


def _scores(counts: Counter[str], cells: int) -> tuple[float, float]:
    tp, fp = counts["tp"], counts["fp"]
    precision = tp / (tp + fp) if tp + fp else float("nan")
    return precision, tp / cells if cells else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--presidio-rows", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)

    frame = table(rows=args.rows, seed=0)
    sample_index = np.sort(
        np.random.default_rng(1).choice(
            args.rows, size=min(args.presidio_rows, args.rows), replace=False
        )
    )
    sample = frame.iloc[sample_index].reset_index(drop=True)

    bastion_times, presidio_times = [], []
    for _ in range(args.reps):
        elapsed, bastion_counts = _bastion(frame)
        bastion_times.append(elapsed)
        elapsed, presidio_counts = _presidio(sample)
        presidio_times.append(elapsed)
    bastion_rate = args.rows / statistics.median(bastion_times)
    presidio_rate = len(sample) / statistics.median(presidio_times)

    print(f"PII scan, reference table: {args.rows:,} rows, {frame.shape[1]} columns")
    print(
        f"Presidio {len(sample):,}-row random sample (a full pass would take "
        f"{args.rows / presidio_rate / 60:.0f} min); medians of {args.reps} runs"
    )
    print()
    print(
        f"{'entity':<12} {'Bastion P':>10} {'Bastion R':>10} {'Presidio P':>11} {'Presidio R':>11}"
    )
    recall_ok = True
    for entity in PRESIDIO:
        column_cells = sum(1 for e in TABLE_PII_COLUMNS.values() if e == entity)
        bp, br = _scores(bastion_counts[entity], column_cells * args.rows)
        pp, pr = _scores(presidio_counts[entity], column_cells * len(sample))
        recall_ok &= br >= pr
        print(f"{entity:<12} {bp:>10.4f} {br:>10.4f} {pp:>11.4f} {pr:>11.4f}")
    print()
    for label, rate, times in (
        ("Bastion", bastion_rate, bastion_times),
        ("Presidio", presidio_rate, presidio_times),
    ):
        print(f"{label:<9} {rate:>14,.0f} rows/s  (median {statistics.median(times):.2f} s)")
    ratio = bastion_rate / presidio_rate
    print(f"recall at least Presidio's on every shared entity: {'yes' if recall_ok else 'NO'}")
    print(
        "note: the generator's e-mail domains use reserved names (example.com, *.test); "
        "Presidio's e-mail validator accepts only public suffixes, hence its e-mail recall"
    )
    print(f"throughput ratio Bastion / Presidio: {ratio:,.0f}x (target >= 20x)")


if __name__ == "__main__":
    main()
