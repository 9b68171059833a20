"""The audit log (search and filters, chain verification, export) and the compliance reports."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from bastion.errors import BastionError, InvalidInput
from bastion.governance.compliance import build_report
from bastion.security.audit_chain import unsigned_tail_text
from bastion.security.audit_log import AuditQuery
from bastion.server.deps import DatabaseDep, Principal
from bastion.server.permissions import Permission
from bastion.server.routes.audit import export_response
from bastion.server.services import compliance
from bastion.server.services.agents import HEARTBEAT_ACTIONS
from bastion.server.web.render import WEB_PREFIX, page
from bastion.server.web.session import require_page

__all__ = ["router"]

router = APIRouter(prefix=WEB_PREFIX, include_in_schema=False)
Auditor = Annotated[Principal, require_page(Permission.AUDIT_READ)]


#: A ``from`` or ``to`` filter: a date or a time (UTC), as a date or time input sends it.
_INSTANT = r"^(\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?)?$"
#: How far past the instant it names a ``to`` filter reaches: its whole day, minute, second.
_REACH = {10: dt.timedelta(days=1), 16: dt.timedelta(minutes=1), 19: dt.timedelta(seconds=1)}
#: Details longer than this fold away under their first characters.
PREVIEW = 160


def _instant(text: str, *, name: str, through: bool = False) -> dt.datetime | None:
    """A time filter as a UTC instant (None: none given); a ``to`` filter (``through``)
    covers the whole day, minute or second it names."""
    if not text:
        return None
    try:
        instant = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
    except ValueError:
        raise InvalidInput(
            f"{name}: {text!r} is not a date; write YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)"
        ) from None
    if not through:
        return instant
    try:
        return instant + _REACH.get(len(text), dt.timedelta(microseconds=1))
    except OverflowError:  # the end of year 9999: no bound at all
        return None


def _details(stored: str) -> dict[str, str]:
    """An event's details as stored (canonical JSON), a one-line preview, and indented."""
    try:
        indented = json.dumps(json.loads(stored), indent=2, ensure_ascii=False)
    except ValueError:  # not JSON (a tampered row): shown as it is
        indented = stored
    preview = stored if len(stored) <= PREVIEW else f"{stored[:PREVIEW]}…"
    return {"details": stored, "preview": preview, "indented": indented}


@router.get("/audit", response_class=HTMLResponse)
def audit(
    request: Request,
    _: Auditor,
    database: DatabaseDep,
    q: Annotated[str, Query(max_length=200)] = "",
    action: Annotated[str, Query(max_length=100, pattern=r"^[A-Za-z0-9_.-]*$")] = "",
    actor: Annotated[str, Query(max_length=255, pattern=r"^[^\x00-\x1f\x7f]*$")] = "",
    since: Annotated[str, Query(alias="from", max_length=26, pattern=_INSTANT)] = "",
    until: Annotated[str, Query(alias="to", max_length=26, pattern=_INSTANT)] = "",
    heartbeats: bool = False,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> Response:
    """The newest events that match the filters (``before``: older than that seq), newest
    first, agents' heartbeats left out unless asked for (``heartbeats``, or an action
    filter); and whether the chain verifies (from the last signed checkpoint an earlier
    view verified; from its start every ``audit_whole_verify_minutes``)."""
    query = AuditQuery(
        text=q,
        action=action,
        actor=actor,
        since=_instant(since, name="from"),
        until=_instant(until, name="to", through=True),
        hidden=() if heartbeats or action else HEARTBEAT_ACTIONS,
        before=before,
    )
    rows = database.audit.search(query, limit=limit)
    events = [
        {
            "seq": row.seq,
            "ts": row.ts,
            "actor": row.actor,
            "action": row.action,
            "target": row.target,
            **_details(row.details),
        }
        for row in reversed(rows)
    ]
    filters = {
        key: value
        for key, value in (
            ("q", q),
            ("action", action),
            ("actor", actor),
            ("from", since),
            ("to", until),
            ("heartbeats", "on" if heartbeats else ""),
            ("limit", str(limit)),
        )
        if value
    }
    older = {**filters, "before": str(events[-1]["seq"])} if len(rows) == limit else None
    try:
        verified = database.verify_audit_for_page()
        report = verified.report
        chain = {
            "ok": True,
            "pending": verified.pending,
            "resumed_after": report.resumed_from.seq if report.resumed_from else None,
            "whole_at": verified.whole_at,
            "whole_every_minutes": int(database.audit_whole_every.total_seconds() // 60),
            "events": report.events,
            "head_seq": report.head_seq,
            "head_hash": report.head_hash,
            "checkpoints": report.checkpoints,
            "last_checkpoint_seq": report.last_checkpoint_seq,
            "signed_through": report.signed_through,
            "unsigned_tail": report.unsigned_tail,
            "unsigned": unsigned_tail_text(report),
        }
    except BastionError as broken:
        chain = {"ok": False, "problem": str(broken)}
    return page(
        request,
        "audit.html.j2",
        events=events,
        chain=chain,
        filters=filters,
        q=q,
        action=action,
        actor=actor,
        since=since,
        until=until,
        heartbeats=heartbeats,
        heartbeat_actions=HEARTBEAT_ACTIONS,
        paged=before is not None,
        older=older,
        limit=limit,
    )


@router.get("/audit/export")
def export(principal: Auditor, database: DatabaseDep) -> StreamingResponse:
    """The signed export: a signed head, then every event up to it as canonical JSON lines."""
    return export_response(database, actor=principal.actor, filename="bastion-audit.jsonl")


@router.get("/compliance", response_class=HTMLResponse)
def compliance_page(
    request: Request,
    _: Auditor,
    database: DatabaseDep,
    framework: Annotated[Literal["hipaa", "gdpr"], Query()] = "hipaa",
) -> Response:
    """The HIPAA 164.312 or GDPR report, built from the evidence the control plane holds."""
    with database.read() as session:
        facts = compliance.gather_facts(database, session, transport=request.url.scheme)
    report = build_report(framework, facts)
    return page(request, "compliance.html.j2", report=report, framework=framework)
