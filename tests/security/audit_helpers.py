"""Helpers that tamper with a stored audit chain the way an insider with SQL access would."""

from __future__ import annotations

from sqlalchemy import Engine, text

from bastion.security.audit_chain import EventRow


def rows(engine: Engine) -> list[EventRow]:
    with engine.connect() as conn:
        result = conn.execute(
            text(
                "SELECT seq, ts, actor, action, target, details, prev_hash, hash "
                "FROM audit_events ORDER BY seq"
            )
        )
        return [EventRow(*row) for row in result]


def execute(engine: Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def shift_seqs(engine: Engine, *, from_seq: int, delta: int) -> None:
    """Renumber events from ``from_seq`` on by ``delta`` (in two steps to dodge the PK)."""
    execute(
        engine,
        f"UPDATE audit_events SET seq = seq + 1000000 WHERE seq >= {from_seq}",
        f"UPDATE audit_events SET seq = seq - 1000000 + ({delta}) WHERE seq >= 1000000",
    )


def insert_row(engine: Engine, row: EventRow) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_events"
                " (seq, ts, actor, action, target, details, prev_hash, hash)"
                " VALUES (:seq, :ts, :actor, :action, :target, :details, :prev_hash, :hash)"
            ),
            row._asdict(),
        )


def rewrite_from(engine: Engine, seq: int, details: str) -> None:
    """Change event ``seq``'s details and recompute every later hash: a consistent forgery."""
    stored = rows(engine)
    prev_hash = stored[seq - 2].hash if seq > 1 else "0" * 64
    execute(engine, f"DELETE FROM audit_events WHERE seq >= {seq}")
    for row in stored[seq - 1 :]:
        draft = row._replace(
            details=details if row.seq == seq else row.details, prev_hash=prev_hash
        )
        forged = draft._replace(hash=draft.computed_hash())
        insert_row(engine, forged)
        prev_hash = forged.hash
