"""The control plane's audit log (read, verify, export) and its insider-threat alerts."""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from bastion.api.audit import AuditEventOut, AuditVerifyOut
from bastion.api.governance import AlertOut, CommentIn
from bastion.governance.compliance import build_report, render_report
from bastion.security.audit_chain import unsigned_tail_text
from bastion.server.db.models import Alert
from bastion.server.db.session import Database
from bastion.server.deps import DatabaseDep, Principal, require
from bastion.server.permissions import Permission
from bastion.server.services import alerts, compliance

__all__ = ["export_response", "router"]

router = APIRouter(tags=["audit"])
Auditor = Annotated[Principal, require(Permission.AUDIT_READ)]


@router.get("/audit/events", response_model=list[AuditEventOut])
def list_events(
    _: Auditor,
    database: DatabaseDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEventOut]:
    """The most recent events, oldest first."""
    return [AuditEventOut.model_validate(row.to_export()) for row in database.audit.tail(limit)]


@router.get("/audit/verify", response_model=AuditVerifyOut)
def verify(_: Auditor, database: DatabaseDep) -> AuditVerifyOut:
    """Verify the whole chain; a broken chain is a 409 naming the first bad event.

    ``unsigned_events`` are the events no signed checkpoint covers yet (written since
    ``unsigned_since``): until the next checkpoint, a database writer could change them
    without this verification noticing.
    """
    report = database.audit.verify()
    return AuditVerifyOut(
        events=report.events,
        head_seq=report.head_seq,
        head_hash=report.head_hash,
        checkpoints=report.checkpoints,
        last_checkpoint_seq=report.last_checkpoint_seq,
        signed_through_seq=report.signed_through,
        unsigned_events=report.unsigned_tail,
        unsigned_since=report.unsigned_since,
        unsigned=unsigned_tail_text(report) if report.unsigned_tail else None,
    )


@router.get(
    "/audit/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
            "description": "One canonical JSON event per line.",
        }
    },
)
def export(principal: Auditor, database: DatabaseDep) -> StreamingResponse:
    """A signed head, then every event up to it as canonical JSON lines: verifiable offline
    with the public key (``bastion audit verify --file F --public-key P``)."""
    return export_response(database, actor=principal.actor)


def export_response(
    database: Database, *, actor: str, filename: str | None = None
) -> StreamingResponse:
    """The signed export (the head signed now), streamed (as a download when ``filename``)."""
    with database.write(actor=actor) as unit:
        unit.record("audit.export", "audit-log", {})
    lines = database.audit.export_lines()
    first = next(lines)  # signs the head before the response starts, so a failure is an error
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'} if filename else {}
    return StreamingResponse(
        itertools.chain((first,), lines), media_type="application/x-ndjson", headers=headers
    )


@router.get("/alerts", response_model=list[AlertOut])
def list_alerts(
    _: Annotated[Principal, require(Permission.ALERTS_READ)],
    database: DatabaseDep,
    include_acknowledged: Annotated[bool, Query(alias="all")] = False,
) -> list[Alert]:
    """Insider-threat alerts, newest first (open ones only unless ``all=true``)."""
    with database.read() as session:
        return alerts.list_alerts(session, include_acknowledged=include_acknowledged)


@router.post("/alerts/{alert_id}/acknowledge", response_model=AlertOut)
def acknowledge_alert(
    alert_id: str,
    body: CommentIn,
    principal: Annotated[Principal, require(Permission.ALERTS_WRITE)],
    database: DatabaseDep,
) -> Alert:
    """Mark an alert as looked into (audited with the note)."""
    with database.write(actor=principal.actor) as unit:
        return alerts.acknowledge(unit, alert_id=alert_id, actor=principal.actor, note=body.comment)


_MEDIA = {"json": "application/json", "md": "text/markdown", "html": "text/html"}


@router.get(
    "/compliance/report",
    response_class=PlainTextResponse,
    responses={
        200: {
            "content": {
                media: {"schema": {"type": "object" if fmt == "json" else "string"}}
                for fmt, media in _MEDIA.items()
            },
            "description": "The report, control by control, in the format asked for.",
        },
    },
)
def compliance_report(
    request: Request,
    _: Auditor,
    database: DatabaseDep,
    framework: Annotated[Literal["hipaa", "gdpr"], Query()] = "hipaa",
    fmt: Annotated[Literal["json", "md", "html"], Query(alias="format")] = "json",
) -> PlainTextResponse:
    """A HIPAA 164.312 or GDPR report built from the evidence the control plane holds."""
    with database.read() as session:
        facts = compliance.gather_facts(database, session, transport=request.url.scheme)
    report = build_report(framework, facts)
    headers = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}
    return PlainTextResponse(render_report(report, fmt), media_type=_MEDIA[fmt], headers=headers)
