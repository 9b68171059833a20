"""The tamper-evident audit log: an append-only hash chain stored through SQLAlchemy.

Every event is linked to the previous one by its hash (see
:mod:`bastion.security.audit_chain`). Every ``checkpoint_interval`` events, and on
demand, the head ``(seq, hash)`` is signed with the keyring's signing key and the
signature is appended to the chain as an ``audit.checkpoint`` event; the latest
checkpoint is also written to an anchor file outside the database so a truncated
log is noticed. Appends take a database-wide write lock, so concurrent writers
(threads or processes) still produce one chain.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import getpass
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Engine,
    String,
    Table,
    Text,
    func,
    insert,
    select,
)

from bastion.config import Settings
from bastion.db import create_db_engine, lock_for_append, locked_transaction, metadata
from bastion.errors import AuditChainError, InvalidInput
from bastion.files import atomic_output, atomic_write_bytes, file_lock
from bastion.security.audit_chain import (
    CHECKPOINT_ACTION,
    GENESIS_HASH,
    ChainReport,
    Checkpoint,
    EventRow,
    ExportHead,
    VerifiedPrefix,
    canonical_json,
    canonical_json_text,
    checkpoint_statement,
    event_hash,
    export_header,
    record_hash,
    validate_details,
    verify_chain,
)
from bastion.security.audit_signing import (
    CheckpointSigner,
    KeyringCheckpointSigner,
    checkpoint_verifier,
)
from bastion.security.keys import Keyring

__all__ = [
    "Appended",
    "AuditEvent",
    "AuditLog",
    "AuditQuery",
    "CheckpointSigner",
    "CheckpointTimer",
    "KeyringCheckpointSigner",
    "audit_events",
    "local_actor",
    "open_local_audit_log",
]

_log = logging.getLogger(__name__)

LOCK_NAME = "bastion.audit"
MAX_FIELD = {"actor": 255, "action": 100}

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("ts", String(40), nullable=False),
    Column("actor", String(MAX_FIELD["actor"]), nullable=False),
    Column("action", String(MAX_FIELD["action"]), nullable=False),
    Column("target", Text, nullable=False),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

_COLUMNS = (
    audit_events.c.seq,
    audit_events.c.ts,
    audit_events.c.actor,
    audit_events.c.action,
    audit_events.c.target,
    audit_events.c.details,
    audit_events.c.prev_hash,
    audit_events.c.hash,
)


class Appended(NamedTuple):
    """What ``append_many`` stored: how many events, and the chain head after them."""

    appended: int
    head_seq: int
    head_hash: str


@dataclass(frozen=True)
class AuditEvent:
    """An event to append: who did what to which target, with JSON details."""

    actor: str
    action: str
    target: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditQuery:
    """Which events a search returns; every filter given must hold.

    ``text`` is found in the actor, action, target or details (case as stored);
    ``action`` is an action or its family (``run`` finds ``run.create`` and ``run.event``);
    ``actor`` is exact; ``since`` and ``until`` bound the time stamp (``since <= ts <
    until``, UTC); ``hidden`` are actions left out; ``before`` pages back (seqs below it).
    """

    text: str = ""
    action: str = ""
    actor: str = ""
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    hidden: tuple[str, ...] = ()
    before: int | None = None


def local_actor() -> str:
    """The identity of a local CLI user."""
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"local:uid-{os.getuid()}"


_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime(_TS_FORMAT)


def _stamp(instant: dt.datetime) -> str:
    """``instant`` as the log stores time stamps (a naive one is taken as UTC)."""
    if instant.tzinfo is not None:
        instant = instant.astimezone(dt.UTC)
    return instant.strftime(_TS_FORMAT)


def _check_event(event: AuditEvent) -> str:
    if not 0 < len(event.actor) <= MAX_FIELD["actor"]:
        raise InvalidInput(f"audit actor must be 1..{MAX_FIELD['actor']} characters")
    if not 0 < len(event.action) <= MAX_FIELD["action"]:
        raise InvalidInput(f"audit action must be 1..{MAX_FIELD['action']} characters")
    details = event.details if type(event.details) is dict else dict(event.details)
    validate_details(details)
    return canonical_json_text(details)


class AuditLog:
    """An audit chain in one database."""

    def __init__(
        self,
        engine: Engine,
        *,
        signer: CheckpointSigner | None = None,
        trusted_keys: Sequence[bytes] = (),
        checkpoint_interval: int = 1000,
        anchor_path: Path | None = None,
        create_schema: bool = True,
    ) -> None:
        if checkpoint_interval < 1:
            raise InvalidInput("checkpoint_interval must be at least 1")
        self.engine = engine
        self._signer = signer
        self._trusted = list(trusted_keys)
        self._interval = checkpoint_interval
        self._anchor_path = anchor_path
        if create_schema:
            metadata.create_all(engine, tables=[audit_events])

    # -- writing ---------------------------------------------------------------------------

    def append(
        self, *, actor: str, action: str, target: str, details: Mapping[str, Any] | None = None
    ) -> EventRow:
        """Append one event in its own transaction; return it as stored."""
        event = AuditEvent(actor=actor, action=action, target=target, details=details or {})
        return EventRow(**self._append([event])[0])

    def append_many(self, events: Sequence[AuditEvent]) -> Appended:
        """Append events atomically and in order, in one transaction."""
        stored = self._append(events)
        if not stored:
            return Appended(appended=0, head_seq=0, head_hash=GENESIS_HASH)
        return Appended(
            appended=len(stored), head_seq=stored[-1]["seq"], head_hash=stored[-1]["hash"]
        )

    def _append(self, events: Sequence[AuditEvent]) -> list[dict[str, Any]]:
        """Append under the write lock in a transaction of its own."""
        with locked_transaction(self.engine, LOCK_NAME) as conn:
            stored, checkpoint = self.append_in(conn, events)
        if checkpoint is not None:
            self.write_anchor(checkpoint)
        return stored

    def append_in(
        self, conn: Connection, events: Sequence[AuditEvent]
    ) -> tuple[list[dict[str, Any]], Checkpoint | None]:
        """Append inside the caller's transaction, so the events commit with the change.

        On SQLite the caller's transaction must have begun with ``BEGIN IMMEDIATE``
        (:func:`bastion.db.locked_transaction` or a write session); on PostgreSQL the
        advisory lock is taken here. After commit, pass the returned checkpoint (if
        any) to :meth:`write_anchor`.
        """
        prepared = [(e.actor, e.action, e.target, _check_event(e)) for e in events]
        params: list[dict[str, Any]] = []
        user_events: list[dict[str, Any]] = []
        checkpoint: Checkpoint | None = None
        lock_for_append(conn)
        seq, prev_hash = _head(conn)
        ts = _now()  # one transaction, one instant
        for actor, action, target, details_json in prepared:
            seq += 1
            digest = record_hash(seq, ts, actor, action, target, details_json, prev_hash)
            user_events.append(
                {
                    "seq": seq,
                    "ts": ts,
                    "actor": actor,
                    "action": action,
                    "target": target,
                    "details": details_json,
                    "prev_hash": prev_hash,
                    "hash": digest,
                }
            )
            params.append(user_events[-1])
            prev_hash = digest
            if self._signer is not None and seq % self._interval == 0:
                checkpoint, row = self._checkpoint_row(seq + 1, seq, prev_hash)
                params.append(row._asdict())
                seq, prev_hash = row.seq, row.hash
        if params:
            conn.execute(_INSERT, params)
        return user_events, checkpoint

    def checkpoint(self) -> Checkpoint:
        """Sign the current head now (appending an ``audit.checkpoint`` event)."""
        checkpoint = self.checkpoint_if_new(always=True)
        if checkpoint is None:
            raise InvalidInput("the audit log is empty; nothing to sign yet")
        return checkpoint

    def checkpoint_if_new(self, *, always: bool = False) -> Checkpoint | None:
        """Sign the head unless it already is a checkpoint event (or the log is empty).

        This is what start-up, the timer and shutdown call: a quiet log gains no
        checkpoint events, and a busy one never leaves more than one interval unsigned.
        """
        if self._signer is None:
            raise InvalidInput("this audit log has no signing key; cannot sign a checkpoint")
        with locked_transaction(self.engine, LOCK_NAME) as conn:
            head = conn.execute(_HEAD_ROW).first()
            if head is None or (head.action == CHECKPOINT_ACTION and not always):
                return None
            checkpoint, row = self._checkpoint_row(head.seq + 1, head.seq, head.hash)
            conn.execute(_INSERT, [row._asdict()])
        self.write_anchor(checkpoint)
        return checkpoint

    def sign_head(self) -> ExportHead:
        """Sign the chain for an export: the head as it is now, every event before it covered.

        A checkpoint event is appended first when events came after the last one (so the
        stored chain is signed that far too); the returned statement, detached from the
        chain, signs that last event itself. An export starts with it, so a reader can
        tell a cut or rewritten tail with nothing but the public key.
        """
        self.checkpoint_if_new()
        with self.engine.connect() as conn:
            head = conn.execute(_HEAD_ROW).first()
        if head is None or self._signer is None:
            raise InvalidInput("the audit log is empty; nothing to export yet")
        unsigned = ExportHead(int(head.seq), str(head.hash), self._signer.fingerprint, "", _now())
        signature = base64.b64encode(self._signer.sign(unsigned.statement())).decode()
        return dataclasses.replace(unsigned, signature=signature)

    def _row(
        self,
        *,
        seq: int,
        actor: str,
        action: str,
        target: str,
        details_json: str,
        prev_hash: str,
    ) -> EventRow:
        ts = _now()
        digest = event_hash(
            seq=seq,
            ts=ts,
            actor=actor,
            action=action,
            target=target,
            details_json=details_json,
            prev_hash=prev_hash,
        )
        return EventRow(seq, ts, actor, action, target, details_json, prev_hash, digest)

    def _checkpoint_row(
        self, seq: int, signed_seq: int, signed_hash: str
    ) -> tuple[Checkpoint, EventRow]:
        checkpoint = self._sign(signed_seq, signed_hash)
        row = self._row(
            seq=seq,
            actor="bastion",
            action=CHECKPOINT_ACTION,
            target="audit-log",
            details_json=canonical_json(checkpoint.to_details()).decode(),
            prev_hash=signed_hash,
        )
        return checkpoint, row

    def _sign(self, seq: int, head_hash: str) -> Checkpoint:
        if self._signer is None:  # pragma: no cover - callers check
            raise InvalidInput("no signing key")
        statement = checkpoint_statement(seq, head_hash)
        signature = base64.b64encode(self._signer.sign(statement)).decode()
        return Checkpoint(seq, head_hash, self._signer.fingerprint, signature)

    def write_anchor(self, checkpoint: Checkpoint) -> None:
        """Record ``checkpoint`` as the head anchor if it is newer than the one there."""
        if self._anchor_path is None:
            return
        with file_lock(self._anchor_path.with_name(self._anchor_path.name + ".lock")):
            current = self._read_anchor()
            if current is not None and current.seq >= checkpoint.seq:
                return
            atomic_write_bytes(self._anchor_path, canonical_json(checkpoint.to_details()))

    def _read_anchor(self) -> Checkpoint | None:
        if self._anchor_path is None or not self._anchor_path.exists():
            return None
        try:
            return Checkpoint.from_details(json.loads(self._anchor_path.read_bytes()))
        except ValueError:
            raise AuditChainError(
                f"{self._anchor_path}: head anchor is damaged", kind="signature", seq=None
            ) from None

    # -- reading ---------------------------------------------------------------------------

    def rows(self, *, through: int | None = None) -> Iterator[EventRow]:
        """Every stored event in seq order (up to seq ``through``), streamed."""
        query = select(*_COLUMNS).order_by(audit_events.c.seq)
        if through is not None:
            query = query.where(audit_events.c.seq <= through)
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=5000).execute(query)
            for row in result:
                yield EventRow(*row)

    def tail(self, count: int) -> list[EventRow]:
        """The last ``count`` events, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*_COLUMNS).order_by(audit_events.c.seq.desc()).limit(count)
            ).all()
        return [EventRow(*row) for row in reversed(rows)]

    def search(self, query: AuditQuery, *, limit: int) -> list[EventRow]:
        """The last ``limit`` events that ``query`` matches, oldest first.

        The newest rows are read backwards by seq (the primary key) until ``limit`` match,
        so a page costs what it shows unless the filters match few of many rows.
        """
        column = audit_events.c
        where: list[ColumnElement[bool]] = []
        if query.text:
            where.append(
                column.actor.contains(query.text, autoescape=True)
                | column.action.contains(query.text, autoescape=True)
                | column.target.contains(query.text, autoescape=True)
                | column.details.contains(query.text, autoescape=True)
            )
        if query.action:
            where.append(
                (column.action == query.action)
                | column.action.startswith(f"{query.action}.", autoescape=True)
            )
        if query.actor:
            where.append(column.actor == query.actor)
        # Stored time stamps are fixed-width UTC text: they compare as the instants do.
        if query.since is not None:
            where.append(column.ts >= _stamp(query.since))
        if query.until is not None:
            where.append(column.ts < _stamp(query.until))
        if query.hidden:
            where.append(column.action.not_in(query.hidden))
        if query.before is not None:
            where.append(column.seq < query.before)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*_COLUMNS).where(*where).order_by(column.seq.desc()).limit(limit)
            ).all()
        return [EventRow(*row) for row in reversed(rows)]

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(audit_events)).scalar_one())

    def verify(
        self,
        *,
        trusted_keys: Sequence[bytes] | None = None,
        since: VerifiedPrefix | None = None,
    ) -> ChainReport:
        """Verify the whole chain, its checkpoints and the head anchor.

        With ``since`` (an earlier report's ``prefix``), only the events after that signed
        checkpoint are read, once its stored hash is seen unchanged; the events before it
        are trusted as verified then. Whenever that cannot stand (the checkpoint row
        changed or is gone, the anchor is older than it) or the shorter check fails, the
        whole chain is verified instead, so a failure always names the first bad event.
        """
        keys = list(trusted_keys) if trusted_keys is not None else self._trusted
        anchor = self._read_anchor()
        with self.engine.connect() as conn:
            if since is not None and self._prefix_stands(conn, since, anchor):
                try:
                    return self._verify_from(conn, keys, anchor, since)
                except AuditChainError:
                    pass  # verified again from the start, which names the first problem
            return self._verify_from(conn, keys, anchor, None)

    @staticmethod
    def _prefix_stands(conn: Connection, since: VerifiedPrefix, anchor: Checkpoint | None) -> bool:
        if anchor is not None and anchor.seq < since.signed_seq:
            return False
        stored = conn.execute(
            select(audit_events.c.hash).where(audit_events.c.seq == since.seq)
        ).first()
        return stored is not None and stored[0] == since.hash

    @staticmethod
    def _verify_from(
        conn: Connection,
        keys: Sequence[bytes],
        anchor: Checkpoint | None,
        since: VerifiedPrefix | None,
    ) -> ChainReport:
        def find_hash(digest: str) -> int | None:
            found = conn.execute(
                select(audit_events.c.seq).where(audit_events.c.hash == digest)
            ).first()
            return int(found[0]) if found else None

        query = select(*_COLUMNS).order_by(audit_events.c.seq)
        if since is not None:
            query = query.where(audit_events.c.seq > since.seq)
        result = conn.execution_options(yield_per=5000).execute(query)
        return verify_chain(
            (EventRow(*row) for row in result),
            find_hash=find_hash,
            verify_checkpoint=checkpoint_verifier(keys),
            anchor=anchor,
            start=since,
        )

    def export_lines(self) -> Iterator[bytes]:
        """The signed export, line by line: the signed head first, then every event up to it.

        The head is signed before the first line is yielded; events appended while the
        export streams come after that head and are left for the next export.
        """
        head = self.sign_head()
        yield export_header(head) + b"\n"
        for row in self.rows(through=head.seq):
            yield canonical_json(row.to_export()) + b"\n"

    def export(self, path: Path) -> int:
        """Write the signed export (:meth:`export_lines`) to ``path``; return the event count."""
        count = -1  # the first line is the signed head
        with atomic_output(path, mode=0o600) as handle:
            for line in self.export_lines():
                handle.write(line)
                count += 1
        return count


class CheckpointTimer:
    """Keeps a long-running process's unsigned tail short: signs the head when started,
    every ``every`` seconds while events keep arriving, and once more when stopped."""

    def __init__(self, log: AuditLog, *, every: float) -> None:
        self._log = log
        self._every = every
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-checkpoints", daemon=True)

    def start(self) -> None:
        self._log.checkpoint_if_new()  # a start that cannot sign fails, before serving anyone
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        self._sign()

    def _run(self) -> None:
        while not self._stopped.wait(self._every):
            self._sign()

    def _sign(self) -> None:
        try:
            self._log.checkpoint_if_new()
        except Exception:  # the database is away: say so, and sign at the next tick
            _log.exception("could not sign an audit checkpoint; retrying in %.0f s", self._every)


_HEAD = select(audit_events.c.seq, audit_events.c.hash).order_by(audit_events.c.seq.desc()).limit(1)
_HEAD_ROW = (
    select(audit_events.c.seq, audit_events.c.hash, audit_events.c.action)
    .order_by(audit_events.c.seq.desc())
    .limit(1)
)
_INSERT = insert(audit_events)


def _head(conn: Connection) -> tuple[int, str]:
    head = conn.execute(_HEAD).first()
    return (int(head[0]), str(head[1])) if head else (0, GENESIS_HASH)


def open_local_audit_log(settings: Settings, keyring: Keyring | None) -> AuditLog:
    """The audit log of this ``BASTION_HOME``, signing checkpoints with its keyring."""
    return AuditLog(
        create_db_engine(settings.local_audit_database),
        signer=KeyringCheckpointSigner(keyring) if keyring else None,
        trusted_keys=[key.public_pem for key in keyring.signing_keys()] if keyring else (),
        checkpoint_interval=settings.audit_checkpoint_interval,
        anchor_path=settings.home_dir / "audit-anchor.json",
    )
