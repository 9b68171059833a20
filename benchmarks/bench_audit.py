"""Audit log: chained appends versus plain inserts of the same rows, and verification rate.

Both sides write the same 100k events into the same SQLite database (WAL,
synchronous=FULL), in transactions of ``--batch`` events. The plain side inserts
the same eight columns into an identical table (a timestamp per transaction,
details serialised to JSON, the two hash columns filled with a same-size
placeholder) with no lock, no head lookup, no hashing and no checkpoints; the
chained side is ``AuditLog.append_many`` (write lock, head lookup, SHA-256
chain, a signed checkpoint every 1000 events). Then the whole
chain is verified (hash links, content hashes, checkpoint signatures), and, after
1000 more events, verified again from the last checkpoint the first pass reached (what
the dashboard's audit page does between verifications from the start).

    python benchmarks/bench_audit.py [--events 100000] [--batch 100] [--reps 3]
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import BigInteger, Column, Engine, MetaData, String, Table, Text, insert

from bastion.config import Settings
from bastion.db import create_db_engine
from bastion.security.audit_log import AuditEvent, open_local_audit_log
from bastion.security.keys import load_keyring


def _events(count: int) -> list[AuditEvent]:
    return [
        AuditEvent(
            actor=f"user-{i % 17}",
            action="artifact.encrypt",
            target=f"/data/cluster-a/datasets/patients/v{i}.bastion",
            details={"artifact_id": f"{i:032x}", "kind": "dataset", "kek_key_id": 123456789},
        )
        for i in range(count)
    ]


def _plain_table(engine: Engine) -> Table:
    metadata = MetaData()
    table = Table(
        "plain_events",
        metadata,
        Column("seq", BigInteger, primary_key=True, autoincrement=False),
        Column("ts", String(40)),
        Column("actor", String(255)),
        Column("action", String(100)),
        Column("target", Text),
        Column("details", Text),
        Column("prev_hash", String(64)),
        Column("hash", String(64)),
    )
    metadata.create_all(engine)
    return table


# Same-size stand-in for the hash columns: the plain rows carry the same bytes.
PLACEHOLDER_HASH = "0" * 64


def _plain(engine: Engine, events: list[AuditEvent], batch: int) -> float:
    """What an application does without a chain: timestamp, serialise, insert."""
    table = _plain_table(engine)
    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    seq = 0
    started = time.perf_counter()
    for start in range(0, len(events), batch):
        ts = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        rows = []
        for event in events[start : start + batch]:
            seq += 1
            rows.append(
                {
                    "seq": seq,
                    "ts": ts,
                    "actor": event.actor,
                    "action": event.action,
                    "target": event.target,
                    "details": encode(event.details),
                    "prev_hash": PLACEHOLDER_HASH,
                    "hash": PLACEHOLDER_HASH,
                }
            )
        with engine.begin() as conn:
            conn.execute(insert(table), rows)
    return time.perf_counter() - started


def _one_rep(
    events: list[AuditEvent], batch: int, chained_first: bool
) -> tuple[float, float, int, float, int, float]:
    with tempfile.TemporaryDirectory(prefix="bastion-bench-audit-") as tmp:
        home = Path(tmp)
        settings = Settings(
            home=home,
            master_key=SecretStr(base64.b64encode(os.urandom(32)).decode()),
            local_audit_database_url=f"sqlite:///{home / 'audit.db'}",
        )
        log = open_local_audit_log(settings, load_keyring(settings))
        engine = create_db_engine(settings.local_audit_database)

        def chained() -> float:
            started = time.perf_counter()
            for start in range(0, len(events), batch):
                log.append_many(events[start : start + batch])
            return time.perf_counter() - started

        if chained_first:
            c_time = chained()
            p_time = _plain(engine, events, batch)
        else:
            p_time = _plain(engine, events, batch)
            c_time = chained()
        started = time.perf_counter()
        report = log.verify()
        v_time = time.perf_counter() - started
        # What a dashboard view does next: 1,000 new events, verified from the last
        # checkpoint the previous verification reached.
        log.append_many(events[:1000])
        started = time.perf_counter()
        resumed = log.verify(since=report.prefix)
        r_time = time.perf_counter() - started
        # Below the checkpoint interval (1000 events) there is no checkpoint to resume from:
        # the view verifies everything.
        start = resumed.resumed_from.events if resumed.resumed_from is not None else 0
        r_events = resumed.events - start
        return c_time, p_time, report.events, v_time, r_events, r_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    events = _events(args.events)
    # Alternate which side writes first, so WAL and page-cache effects even out.
    runs = [_one_rep(events, args.batch, rep % 2 == 0) for rep in range(args.reps)]
    c_time = statistics.median(r[0] for r in runs)
    p_time = statistics.median(r[1] for r in runs)
    ratio = statistics.median(r[1] / r[0] for r in runs)
    v_events = runs[0][2]
    v_time = statistics.median(r[3] for r in runs)
    n = args.events
    print(f"audit: {n} events in transactions of {args.batch}, median of {args.reps} runs")
    print(f"  chained appends (AuditLog.append_many): {n / c_time:9.0f} events/s  ({c_time:.2f} s)")
    print(f"  plain inserts of the same rows:         {n / p_time:9.0f} events/s  ({p_time:.2f} s)")
    print(
        f"  verification: {v_events / v_time:9.0f} events/s  "
        f"({v_events} events incl. checkpoints, {v_time:.2f} s; target >= 200000)"
    )
    r_events, r_time = runs[0][4], statistics.median(r[5] for r in runs)
    print(
        f"  resumed from the last verified checkpoint (a dashboard view after 1000 new "
        f"events): {r_events} events read, {1000 * r_time:.1f} ms "
        f"({v_time / r_time:.0f}x less than verifying all)"
    )
    print(f"  ratio chained/plain (median of per-run ratios): {ratio:.2f}  (target >= 0.70)")


if __name__ == "__main__":
    main()
