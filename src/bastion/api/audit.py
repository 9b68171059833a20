"""The audit log as the API shows it: events and the chain's verification."""

from __future__ import annotations

from typing import Any

from bastion.api.common import (
    Response,
)

__all__ = ["AuditEventOut", "AuditVerifyOut"]


class AuditEventOut(Response):
    seq: int
    ts: str
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    hash: str


class AuditVerifyOut(Response):
    events: int
    head_seq: int
    head_hash: str
    checkpoints: int
    last_checkpoint_seq: int
    #: The last event a signature covers (a checkpoint event covers itself).
    signed_through_seq: int
    #: Events after ``signed_through_seq``, and when the oldest of them was written.
    unsigned_events: int
    unsigned_since: str | None
    #: A sentence on the unsigned tail for people, None when every event is signed.
    unsigned: str | None
