"""Registering a large CSV: Bastion's streaming ingest job versus pandas reading the whole table.

Every side reads the same CSV, written from the reference table (``bastion.data.reference.table``:
a row id, 8 float features, a category, a binary target and six PII columns, about 200 bytes
a row) at each size, and writes Parquet:

* Bastion, ingest job: ``bastion.agent.data_jobs.run_ingest`` as a job runs it, with the
  file's size and SHA-256 pinned as the CLI pins them. Two streaming passes over the CSV
  (each column's type over the whole file, then conversion), the canonical Parquet file
  written a row group at a time, the SHA-256 of the bytes as they are read; then the
  description from one pass over the Parquet file and a sample of at most 200,000 rows
  (exact schema, PII scan with whole-column counts, outlier, duplicate and label scans) and
  the request left for the agent to seal.
* Bastion, conversion only: ``bastion.data.canonical.write_csv``, the same work as the baseline.
* Baseline, what registration did before: ``pandas.read_csv(low_memory=False)`` of the whole
  file, then ``DataFrame.to_parquet`` (without the scans, which came on top).

Each run is a fresh child process under the address-space limit a job gets by default
(``resources.memory_mb``, 4096 MiB, as ``RLIMIT_AS``). Peak RSS is the child's ``ru_maxrss``
(from ``wait4``); time is the child's own, from the end of its imports to the end of the work.
The sides alternate; medians of ``--reps`` runs. A side that fails under the limit is not
run again at that size. The import floor is the peak RSS of a child that only imports.

    python benchmarks/bench_ingest.py [--rows 100000 1000000 10000000] [--reps 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Rows generated at a time (the generator holds one chunk).
CHUNK_ROWS = 250_000
#: The address-space limit of a job (``resources.memory_mb`` defaults to 4096).
LIMIT_MIB = 4096
SIDES = ("bastion", "convert", "baseline")
LABELS = {
    "bastion": "Bastion ingest job",
    "convert": "Bastion conversion only",
    "baseline": "pandas read_csv + to_parquet",
}


def _write_csv(path: Path, rows: int) -> None:
    """The reference table's columns, generated a chunk at a time (seeded per chunk)."""
    from bastion.data.reference import table

    with path.open("w", newline="", encoding="utf-8") as file:
        for index, start in enumerate(range(0, rows, CHUNK_ROWS)):
            chunk = table(rows=min(CHUNK_ROWS, rows - start), seed=index)
            chunk["row_id"] += start
            chunk.to_csv(file, index=False, header=index == 0)


def _child(side: str, source: Path, workdir: Path, report: Path) -> None:
    """One run of one side, in this (child) process; writes its time to ``report``."""
    if side == "bastion":
        from types import SimpleNamespace
        from typing import cast

        from bastion.agent.data_jobs import run_ingest
        from bastion.agent.job import JobContext
        from bastion.spec import IngestJob

        pins = json.loads((source.parent / "pins.json").read_text())
        job = IngestJob.model_validate(
            {"type": "ingest", "source": str(source), "dataset": "bench", "target": "target"} | pins
        )
        context = cast(JobContext, SimpleNamespace(log=lambda _line: None, workdir=workdir))
        started = time.perf_counter()
        run_ingest(context, job)
    elif side == "convert":
        from bastion.data.canonical import write_csv

        started = time.perf_counter()
        write_csv(source, workdir / "data.parquet")
    elif side == "baseline":
        import pandas as pd

        started = time.perf_counter()
        frame = pd.read_csv(source, low_memory=False)
        frame.to_parquet(workdir / "data.parquet", index=False)
    else:  # "floor-bastion" / "floor-pandas": the imports alone
        import pandas  # noqa: F401

        if side == "floor-bastion":
            import bastion.agent.data_jobs  # noqa: F401
        started = time.perf_counter()
    report.write_text(json.dumps({"seconds": time.perf_counter() - started}))


def _limit() -> None:
    limit = LIMIT_MIB << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _run(side: str, source: Path, root: Path) -> dict[str, Any]:
    """Run one side in a child process; its time, peak RSS, and whether it completed."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{side}-", dir=root))
    report = workdir / "report.json"
    with (workdir / "stderr.txt").open("wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, __file__, "--child", side, str(source), str(workdir), str(report)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=_limit,  # noqa: PLW1509 - the job's limit, set before the child starts
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    result: dict[str, Any] = {"rss_mib": usage.ru_maxrss / 1024, "ok": child.returncode == 0}
    if result["ok"]:
        result["seconds"] = json.loads(report.read_text())["seconds"]
        output = workdir / ("outputs" if side == "bastion" else "") / "data.parquet"
        if output.is_file():
            import pyarrow.parquet as pq

            result["rows"] = pq.ParquetFile(output).metadata.num_rows
    else:
        tail = (workdir / "stderr.txt").read_text(errors="replace").strip().splitlines()
        result["error"] = tail[-1][:160] if tail else f"exit {child.returncode}"
    shutil.rmtree(workdir)
    return result


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(float(run[key]) for run in runs))


def _measure(rows: int, root: Path, reps: int) -> dict[str, list[dict[str, Any]]]:
    folder = root / f"rows-{rows}"
    folder.mkdir()
    source = folder / "table.csv"
    started = time.perf_counter()
    _write_csv(source, rows)
    with source.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256")
    size = source.stat().st_size
    (folder / "pins.json").write_text(json.dumps({"sha256": digest.hexdigest(), "size": size}))
    print(
        f"{rows:>12,} rows: {size / 2**20:,.0f} MiB of CSV "
        f"(written in {time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for _ in range(reps):
        for side in SIDES:
            if runs[side] and not runs[side][-1]["ok"]:
                continue  # failed under the limit once: not run again at this size
            run = _run(side, source, root)
            if run["ok"] and run.get("rows", rows) != rows:
                raise RuntimeError(f"{side} wrote {run['rows']} rows of {rows}")
            runs[side].append(run)
    source.unlink()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, source, workdir, report = args.child
        _child(side, Path(source), Path(workdir), Path(report))
        return

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as folder:
        root = Path(folder)
        floors = {
            side: _run(f"floor-{side}", root / "none", root)["rss_mib"]
            for side in ("bastion", "pandas")
        }
        print(
            f"import floor (peak RSS of a child that only imports): Bastion job "
            f"{floors['bastion']:.0f} MiB, pandas {floors['pandas']:.0f} MiB; "
            f"limit {LIMIT_MIB} MiB of address space per child; medians of {args.reps}"
        )
        results = {rows: _measure(rows, root, args.reps) for rows in args.rows}

    print()
    print(f"{'rows':>12} {'side':<30} {'seconds':>9} {'peak RSS MiB':>13} {'rows/s':>12}")
    for rows, runs in results.items():
        for side in SIDES:
            done = [run for run in runs[side] if run["ok"]]
            if not done:
                failed = runs[side][0]
                print(
                    f"{rows:>12,} {LABELS[side]:<30} {'failed':>9} "
                    f"{failed['rss_mib']:>13,.0f}  ({failed['error']})"
                )
                continue
            seconds, rss = _median(done, "seconds"), _median(done, "rss_mib")
            print(
                f"{rows:>12,} {LABELS[side]:<30} {seconds:>9.2f} {rss:>13,.0f} "
                f"{rows / seconds:>12,.0f}"
            )
    compared = [
        rows
        for rows, runs in results.items()
        if all(run["ok"] for side in SIDES for run in runs[side])
    ]
    largest = max(results)
    job = [run for run in results[largest]["bastion"] if run["ok"]]
    if job:
        rss = _median(job, "rss_mib")
        verdict = "met" if rss < 1024 else "NOT met"
        print(
            f"Bastion ingest job at {largest:,} rows: {rss:,.0f} MiB peak RSS "
            f"(target < 1024 MiB: {verdict})"
        )
    if not compared:
        print("peak RSS ratio baseline / Bastion ingest job: n/a (no size where all completed)")
        return
    rows = max(compared)
    baseline = _median(results[rows]["baseline"], "rss_mib")
    for side in ("convert", "bastion"):
        ratio = baseline / _median(results[rows][side], "rss_mib")
        print(f"peak RSS ratio baseline / {LABELS[side]} at {rows:,} rows: {ratio:.2f}x")


if __name__ == "__main__":
    main()
