"""The audit log (search, chain verification, export) and the compliance reports."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from bastion.errors import BastionError
from bastion.governance.compliance import build_report
from bastion.security.audit_chain import unsigned_tail_text
from bastion.server.deps import DatabaseDep, Principal
from bastion.server.permissions import Permission
from bastion.server.routes.audit import export_response
from bastion.server.services import compliance
from bastion.server.web.render import WEB_PREFIX, page
from bastion.server.web.session import require_page

__all__ = ["router"]

router = APIRouter(prefix=WEB_PREFIX, include_in_schema=False)
Auditor = Annotated[Principal, require_page(Permission.AUDIT_READ)]


@router.get("/audit", response_class=HTMLResponse)
def audit(
    request: Request,
    _: Auditor,
    database: DatabaseDep,
    q: Annotated[str, Query(max_length=200)] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> Response:
    """The newest events (those matching ``q``), and whether the chain verifies (from the
    last signed checkpoint an earlier view verified; from its start every
    ``audit_whole_verify_minutes``)."""
    rows = database.audit.search(q, limit=limit) if q else database.audit.tail(limit)
    events = [
        {
            "seq": row.seq,
            "ts": row.ts,
            "actor": row.actor,
            "action": row.action,
            "target": row.target,
            "details": row.details,  # canonical JSON text, shown as stored
        }
        for row in reversed(rows)
    ]
    try:
        report, whole_at = database.verify_audit_for_page()
        chain = {
            "ok": True,
            "resumed_after": report.resumed_from.seq if report.resumed_from else None,
            "whole_at": whole_at,
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
    return page(request, "audit.html.j2", events=events, chain=chain, q=q, limit=limit)


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
