"""The audit chain's math: canonical JSON, event hashes, checkpoints, chain verification.

Pure functions over rows; :mod:`bastion.security.audit_log` does the storage.

An event's hash is ``sha256(canonical_json(record))`` in lowercase hex, where
``record`` is the object ``{action, actor, details, prev_hash, seq, target, ts}``
and ``prev_hash`` is the previous event's hash (64 zeros for seq 1). Canonical
JSON is RFC 8785 (JCS) restricted so that Python's ``json.dumps(sort_keys=True,
separators=(",", ":"), ensure_ascii=False)`` produces it exactly: object keys are
ASCII, numbers are integers of at most 2^53 - 1 in magnitude (no floats).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import enum
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any, NamedTuple

from bastion.errors import AuditChainError, InvalidInput

__all__ = [
    "CHECKPOINT_ACTION",
    "GENESIS_HASH",
    "ChainReport",
    "Checkpoint",
    "EventRow",
    "ExportHead",
    "TamperKind",
    "VerifiedPrefix",
    "canonical_json",
    "canonical_json_text",
    "checkpoint_statement",
    "event_hash",
    "export_header",
    "export_statement",
    "parse_export_header",
    "record_hash",
    "unsigned_tail_text",
    "validate_details",
    "verify_chain",
]

GENESIS_HASH = "0" * 64
CHECKPOINT_ACTION = "audit.checkpoint"
CHECKPOINT_DOMAIN = "bastion-audit-checkpoint/v1"
#: The first line of an export: ``{"export": EXPORT_FORMAT, "head": <checkpoint>}``.
EXPORT_FORMAT = "bastion-audit-export/v1"
MAX_SAFE_INT = 2**53 - 1


class TamperKind(enum.StrEnum):
    MODIFIED = "modified"
    DELETED = "deleted"
    INSERTED = "inserted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    SIGNATURE = "signature"


_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes (see module docstring) of an already validated value."""
    return _canonical(value).encode()


def canonical_json_text(value: Any) -> str:
    """:func:`canonical_json` as text."""
    return _canonical(value)


_PLAIN = frozenset({str, bool, type(None)})


def _flat_and_valid(value: dict[Any, Any]) -> bool:
    for key, item in value.items():
        if type(key) is not str or not key.isascii():
            return False
        kind = type(item)
        if kind not in _PLAIN and (kind is not int or not -MAX_SAFE_INT <= item <= MAX_SAFE_INT):
            return False
    return True


def validate_details(value: Any, *, where: str = "details") -> None:
    """Refuse values whose canonical form would be ambiguous across languages."""
    kind = type(value)
    if kind in _PLAIN:
        return
    if kind is dict and _flat_and_valid(value):
        return  # the common case, checked in one pass
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INT:
            raise InvalidInput(f"audit {where}: integer {value} exceeds 2^53-1; store it as text")
        return
    if isinstance(value, float):
        raise InvalidInput(f"audit {where}: floats are not allowed; store {value!r} as text")
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            validate_details(item, where=f"{where}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise InvalidInput(f"audit {where}: keys must be ASCII strings, got {key!r}")
            validate_details(item, where=f"{where}.{key}")
        return
    raise InvalidInput(f"audit {where}: unsupported type {type(value).__name__}")


class EventRow(NamedTuple):
    """One stored event; ``details`` is its canonical JSON text."""

    seq: int
    ts: str
    actor: str
    action: str
    target: str
    details: str
    prev_hash: str
    hash: str

    def computed_hash(self) -> str:
        return event_hash(
            seq=self.seq,
            ts=self.ts,
            actor=self.actor,
            action=self.action,
            target=self.target,
            details_json=self.details,
            prev_hash=self.prev_hash,
        )

    def to_export(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "details": json.loads(self.details),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


_quote = encode_basestring  # JSON string literal, non-ASCII kept as UTF-8
_sha256 = hashlib.sha256


def event_hash(
    *, seq: int, ts: str, actor: str, action: str, target: str, details_json: str, prev_hash: str
) -> str:
    """SHA-256 of the canonical record; keys appear in sorted order."""
    return record_hash(seq, ts, actor, action, target, details_json, prev_hash)


def record_hash(  # noqa: PLR0917 - positional on purpose: this is the hot path
    seq: int, ts: str, actor: str, action: str, target: str, details_json: str, prev_hash: str, /
) -> str:
    """:func:`event_hash` with positional arguments, in stored column order."""
    record = (
        f'{{"action":{_quote(action)},"actor":{_quote(actor)},"details":{details_json},'
        f'"prev_hash":{_quote(prev_hash)},"seq":{seq},"target":{_quote(target)},'
        f'"ts":{_quote(ts)}}}'
    )
    return _sha256(record.encode()).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that the chain's event ``seq`` has hash ``hash``."""

    seq: int
    hash: str
    key_fingerprint: str
    signature: str  # base64 DER ECDSA P-256 / SHA-256 over checkpoint_statement()

    def statement(self) -> bytes:
        return checkpoint_statement(self.seq, self.hash)

    def to_details(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "hash": self.hash,
            "key_fingerprint": self.key_fingerprint,
            "signature": self.signature,
        }

    @classmethod
    def from_details(cls, details: Mapping[str, Any]) -> Checkpoint:
        try:
            checkpoint = cls(
                seq=int(details["seq"]),
                hash=str(details["hash"]),
                key_fingerprint=str(details["key_fingerprint"]),
                signature=str(details["signature"]),
            )
            base64.b64decode(checkpoint.signature, validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise ValueError("malformed checkpoint") from None
        return checkpoint


def checkpoint_statement(seq: int, head_hash: str) -> bytes:
    """The exact bytes a checkpoint signs."""
    return canonical_json({"domain": CHECKPOINT_DOMAIN, "hash": head_hash, "seq": seq})


@dataclass(frozen=True)
class ExportHead(Checkpoint):
    """The signed head an export begins with: its last event, signed when it was exported.

    It signs a statement of its own domain (:func:`export_statement`), so the signature of
    an in-chain checkpoint cannot pass for an export's head: a copy cut back to an earlier
    checkpoint, with that checkpoint put on its first line, is refused.
    """

    exported_at: str = ""

    def statement(self) -> bytes:
        return export_statement(self.seq, self.hash, self.exported_at)

    def to_details(self) -> dict[str, Any]:
        return {**super().to_details(), "exported_at": self.exported_at}

    @classmethod
    def from_details(cls, details: Mapping[str, Any]) -> ExportHead:
        checkpoint = Checkpoint.from_details(details)
        exported_at = details.get("exported_at")
        if not isinstance(exported_at, str) or not exported_at:
            raise ValueError("malformed export head")
        return cls(
            checkpoint.seq,
            checkpoint.hash,
            checkpoint.key_fingerprint,
            checkpoint.signature,
            exported_at=exported_at,
        )


def export_statement(seq: int, head_hash: str, exported_at: str) -> bytes:
    """The exact bytes an export's head signs (a domain apart from checkpoints')."""
    return canonical_json(
        {"domain": EXPORT_FORMAT, "exported_at": exported_at, "hash": head_hash, "seq": seq}
    )


def export_header(head: ExportHead) -> bytes:
    """The line an export begins with: the signed statement of its last event."""
    return canonical_json({"export": EXPORT_FORMAT, "head": head.to_details()})


def parse_export_header(line: bytes) -> ExportHead | None:
    """The signed head of an export's first line; None when the line is not a header."""
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("export") != EXPORT_FORMAT:
        return None
    head = obj.get("head")
    if not isinstance(head, dict) or set(obj) != {"export", "head"}:
        raise ValueError("malformed export header")
    return ExportHead.from_details(head)


#: Checks a checkpoint's signature; returns False when it is invalid or the key unknown.
CheckpointVerifier = Callable[[Checkpoint], bool]


@dataclass(frozen=True)
class VerifiedPrefix:
    """Where a verification may resume: just after a verified, signed checkpoint event.

    ``seq``/``hash`` are the checkpoint event's own; ``signed_seq``/``signed_hash`` are the
    head its signature covers; ``events`` and ``checkpoints`` count up to and including it.
    Resuming trusts the events up to ``seq`` as they were when they were verified: only a
    verification from the start finds a later change to them.
    """

    seq: int
    hash: str
    signed_seq: int
    signed_hash: str
    events: int
    checkpoints: int


@dataclass(frozen=True)
class ChainReport:
    """The result of a successful verification."""

    events: int
    head_seq: int
    head_hash: str
    checkpoints: int
    last_checkpoint_seq: int
    #: The last point a later verification may resume from (None before the first checkpoint).
    prefix: VerifiedPrefix | None = None
    #: The prefix this verification resumed from (None: it read the chain from the start).
    resumed_from: VerifiedPrefix | None = None
    #: The last event a signature covers: a checkpoint event covers itself (its content is
    #: the signature) and the events before it; a signed head anchor covers up to its seq.
    signed_through: int = 0
    #: When the first event after ``signed_through`` was written (None: every event is signed).
    unsigned_since: str | None = None

    @property
    def unsigned_tail(self) -> int:
        """How many events no signature covers yet (a writer could rewrite them unseen)."""
        return self.head_seq - self.signed_through


def _fail(kind: TamperKind, seq: int | None, message: str) -> AuditChainError:
    where = f"seq {seq}" if seq is not None else "the log"
    return AuditChainError(
        f"audit chain broken at {where} ({kind.value}): {message}", kind=kind.value, seq=seq
    )


def _classify_break(  # noqa: PLR0911 - one return per tamper kind
    *,
    row: EventRow,
    prev: EventRow | None,
    before_prev: EventRow | None,
    following: EventRow | None,
    find_hash: Callable[[str], int | None],
    link_ok: bool,
) -> AuditChainError:
    prev_hash = prev.hash if prev else GENESIS_HASH
    linked_seq = None if link_ok else find_hash(row.prev_hash)
    # (a) This event links to an event stored after it: the order was changed.
    if linked_seq is not None and linked_seq > row.seq:
        return _fail(TamperKind.REORDERED, row.seq, f"event links to the later seq {linked_seq}")
    # (b) The next event links past this one: this one was slipped in.
    if following is not None and following.prev_hash == prev_hash:
        return _fail(TamperKind.INSERTED, row.seq, "an event was inserted into the chain")
    if link_ok:
        return _fail(TamperKind.MODIFIED, row.seq, "event content does not match its hash")
    # (c) This event links past the previous one: the previous one was slipped in.
    if prev is not None and row.prev_hash == (before_prev.hash if before_prev else GENESIS_HASH):
        return _fail(TamperKind.INSERTED, prev.seq, "an event was inserted into the chain")
    # (d) It links to an older event: events were moved.
    if linked_seq is not None:
        return _fail(TamperKind.REORDERED, row.seq, f"event links to seq {linked_seq}")
    # (e) It links to nothing we hold.
    if row.computed_hash() == row.hash and prev is not None:
        return _fail(
            TamperKind.MODIFIED,
            prev.seq,
            "event was rewritten (the next event no longer links to it)",
        )
    return _fail(TamperKind.DELETED, row.seq, "the event before it is missing")


def _signed_checkpoint(seq: int, details: str, verify: CheckpointVerifier) -> Checkpoint:
    """The checkpoint event ``seq`` carries, once its signature verifies."""
    try:
        checkpoint = Checkpoint.from_details(json.loads(details))
    except ValueError:
        raise _fail(TamperKind.SIGNATURE, seq, "malformed checkpoint event") from None
    if not verify(checkpoint):
        raise _fail(
            TamperKind.SIGNATURE,
            seq,
            f"checkpoint signature does not verify with a trusted key "
            f"(key {checkpoint.key_fingerprint[:16]}...)",
        )
    return checkpoint


def _check_anchor(
    anchor: Checkpoint,
    verify: CheckpointVerifier,
    *,
    head_seq: int,
    actual: str | None,
    last_checkpoint_seq: int,
) -> None:
    """The anchor is validly signed, the log reaches it, and its event has the signed hash."""
    if not verify(anchor):
        raise _fail(TamperKind.SIGNATURE, anchor.seq, "the head anchor's signature is invalid")
    if head_seq < anchor.seq:
        raise _fail(
            TamperKind.TRUNCATED,
            head_seq + 1,
            f"the log ends at seq {head_seq} but seq {anchor.seq} was signed",
        )
    if actual != anchor.hash:
        raise _fail(
            TamperKind.MODIFIED,
            last_checkpoint_seq + 1,
            f"events up to seq {anchor.seq} no longer match the signed head anchor",
        )


def verify_chain(
    rows: Iterable[EventRow],
    *,
    find_hash: Callable[[str], int | None],
    verify_checkpoint: CheckpointVerifier,
    anchor: Checkpoint | None = None,
    start: VerifiedPrefix | None = None,
) -> ChainReport:
    """Verify rows given in stored order; raise :class:`AuditChainError` at the first problem.

    With ``start``, ``rows`` begin right after that verified checkpoint event, and the
    verification carries on from its state (the anchor must not be older than it).
    """
    iterator = iter(rows)
    prev: EventRow | None = None
    before_prev: EventRow | None = None
    checkpoints = 0
    last_checkpoint_seq = 0
    hashes_since_checkpoint: dict[int, str] = {}
    signed_heads: dict[int, str] = {}
    events = 0
    expected_seq, prev_hash = 1, GENESIS_HASH
    prefix = start
    unsigned_since: str | None = None  # when the first event after ``prefix`` was written
    if start is not None:
        if anchor is not None and anchor.seq < start.signed_seq:
            raise ValueError("the head anchor is older than the prefix; verify from the start")
        checkpoints, last_checkpoint_seq, events = start.checkpoints, start.signed_seq, start.events
        hashes_since_checkpoint = {start.seq: start.hash}
        signed_heads = {start.signed_seq: start.signed_hash}
        expected_seq, prev_hash = start.seq + 1, start.hash
    for row in iterator:
        events += 1
        seq, ts, actor, action, target, details, row_prev, row_hash = row
        # (1) Sequence numbers run 1, 2, 3, ... with no gaps.
        if seq != expected_seq:
            if seq > expected_seq:
                raise _fail(
                    TamperKind.DELETED, expected_seq, f"seq jumps from {expected_seq - 1} to {seq}"
                )
            raise _fail(
                TamperKind.REORDERED, seq, f"seq {seq} appears after seq {expected_seq - 1}"
            )
        # (2) Each event names the previous event's hash; (3) its own hash matches its content.
        digest = record_hash(seq, ts, actor, action, target, details, row_prev)
        if row_prev != prev_hash or digest != row_hash:
            raise _classify_break(
                row=row,
                prev=prev,
                before_prev=before_prev,
                following=next(iterator, None),
                find_hash=find_hash,
                link_ok=row_prev == prev_hash,
            )
        hashes_since_checkpoint[seq] = row_hash
        # (4) Checkpoint events carry a signature over an earlier (seq, hash).
        if action == CHECKPOINT_ACTION:
            checkpoint = _signed_checkpoint(seq, details, verify_checkpoint)
            if hashes_since_checkpoint.get(checkpoint.seq) != checkpoint.hash:
                raise _fail(
                    TamperKind.MODIFIED,
                    last_checkpoint_seq + 1,
                    f"events between seq {last_checkpoint_seq + 1} and {checkpoint.seq} were "
                    f"rewritten (they no longer match the checkpoint signed at seq {seq})",
                )
            checkpoints += 1
            last_checkpoint_seq = checkpoint.seq
            signed_heads[checkpoint.seq] = checkpoint.hash
            hashes_since_checkpoint = {seq: row_hash}
            unsigned_since = None
            prefix = VerifiedPrefix(
                seq=seq,
                hash=row_hash,
                signed_seq=checkpoint.seq,
                signed_hash=checkpoint.hash,
                events=events,
                checkpoints=checkpoints,
            )
        elif unsigned_since is None:
            unsigned_since = ts
        before_prev, prev = prev, row
        expected_seq, prev_hash = seq + 1, row_hash
    if prev is not None:
        head_seq, head_hash = prev.seq, prev.hash
    else:
        head_seq, head_hash = (start.seq, start.hash) if start else (0, GENESIS_HASH)
    # (5) A signed anchor kept outside the log proves how far the log reached.
    if anchor is not None:
        _check_anchor(
            anchor,
            verify_checkpoint,
            head_seq=head_seq,
            actual=signed_heads.get(anchor.seq) or hashes_since_checkpoint.get(anchor.seq),
            last_checkpoint_seq=last_checkpoint_seq,
        )
    report = ChainReport(
        events=events,
        head_seq=head_seq,
        head_hash=head_hash,
        checkpoints=checkpoints,
        last_checkpoint_seq=last_checkpoint_seq,
        prefix=prefix,
        resumed_from=start,
        signed_through=prefix.seq if prefix else 0,
        unsigned_since=unsigned_since,
    )
    return _covered_by_anchor(report, anchor)


def _covered_by_anchor(report: ChainReport, anchor: Checkpoint | None) -> ChainReport:
    """An anchor that signs further than the last checkpoint event covers up to its seq."""
    if anchor is None or anchor.seq <= report.signed_through:
        return report
    # The first event after the anchor is not tracked; keeping the earlier time makes the
    # reported age err high, never low.
    return dataclasses.replace(
        report,
        signed_through=anchor.seq,
        unsigned_since=None if anchor.seq >= report.head_seq else report.unsigned_since,
    )


def unsigned_tail_text(report: ChainReport, *, now: dt.datetime | None = None) -> str:
    """One line on what no signature covers yet: how many events, and since when."""
    if not report.unsigned_tail:
        return "every event is covered by a signature"
    since = ""
    if report.unsigned_since:
        try:
            written = dt.datetime.strptime(report.unsigned_since, "%Y-%m-%dT%H:%M:%S.%fZ")
        except ValueError:  # the time is part of the hashed record; a writer may set any text
            since = f", the oldest with an unreadable time {report.unsigned_since[:40]!r}"
        else:
            age = (now or dt.datetime.now(dt.UTC)) - written.replace(tzinfo=dt.UTC)
            since = f", the oldest written {report.unsigned_since} ({_age(age)} ago)"
    return (
        f"{report.unsigned_tail} event(s) not yet covered by a signed checkpoint{since}; "
        "until one is signed, a database writer could rewrite or cut them unseen"
    )


def _age(age: dt.timedelta) -> str:
    seconds = max(int(age.total_seconds()), 0)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
