"""Promotion of model versions: policy gates, approvals by distinct reviewers, stages.

Stages are none, staging, production and archived; a model has at most one production
version. Promoting evaluates every gate of the project's policy against the version's
card and records each result; when all pass, an approval request opens (or, for a policy
with ``approvals: 0``, the stage changes at once). Neither the version's creator nor the
requester may approve it; the policy's number of distinct approvers moves it. Every stage
change is a row of the version's history and an audit event.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.errors import Conflict, InvalidInput, SeparationOfDuties
from bastion.governance.policy import Policy as PolicyDocument
from bastion.governance.policy import evaluate_gates, parse_policy
from bastion.server.db.models import (
    Approval,
    ApprovalDecision,
    Model,
    ModelVersion,
    Policy,
    Project,
    StageTransition,
    utcnow,
)
from bastion.server.db.session import UnitOfWork
from bastion.server.services.evaluations import model_card
from bastion.server.services.models import get_model, get_model_version

__all__ = [
    "STAGES",
    "approvals_of",
    "archive",
    "decide",
    "history",
    "list_approvals",
    "list_policies",
    "pending_approval",
    "pending_approvals",
    "promote",
    "put_policy",
    "rollback",
]

STAGES = ("none", "staging", "production", "archived")


def list_policies(session: Session, *, project: Project) -> list[Policy]:
    """The project's policies, by name."""
    query = select(Policy).where(Policy.project_id == project.id).order_by(Policy.name)
    return list(session.scalars(query))


def put_policy(
    unit: UnitOfWork, *, project: Project, name: str, document: dict[str, Any], user_id: str
) -> Policy:
    """Save a policy after checking every gate name and value (unknown or empty: refused)."""
    parsed = parse_policy(document, source=f"policy {name!r}")
    stored = parsed.model_dump(mode="json", exclude_unset=True)
    policy = unit.session.scalars(
        select(Policy).where(Policy.project_id == project.id, Policy.name == name)
    ).first()
    if policy is None:
        policy = Policy(project_id=project.id, name=name, document=stored, updated_by=user_id)
        unit.session.add(policy)
    else:
        policy.document, policy.updated_by, policy.updated_at = stored, user_id, utcnow()
    unit.record("policy.put", f"policy:{project.name}/{name}", {"gates": sorted(stored)})
    return policy


def _policy(session: Session, project: Project, name: str) -> PolicyDocument:
    row = session.scalars(
        select(Policy).where(Policy.project_id == project.id, Policy.name == name)
    ).first()
    if row is None:
        raise Conflict(
            f"project {project.name!r} has no policy {name!r}; an admin saves one first "
            "(bastion policy put NAME --file policy.yaml)"
        )
    return parse_policy(row.document, source=f"policy {name!r}")


def pending_approval(session: Session, version: ModelVersion) -> Approval | None:
    return session.scalars(
        select(Approval).where(
            Approval.model_version_id == version.id, Approval.status == "pending"
        )
    ).first()


def _set_stage(
    unit: UnitOfWork,
    *,
    project: Project,
    name: str,
    version: ModelVersion,
    stage: str,
    actor_id: str,
    reason: str,
    approval_id: str | None = None,
) -> None:
    """Move a version; a new production version sends the previous one to archived."""
    if stage == "production":
        current = unit.session.scalars(
            select(ModelVersion).where(
                ModelVersion.model_id == version.model_id,
                ModelVersion.stage == "production",
                ModelVersion.id != version.id,
            )
        ).all()
        for previous in current:
            _set_stage(
                unit,
                project=project,
                name=name,
                version=previous,
                stage="archived",
                actor_id=actor_id,
                reason=f"replaced in production by version {version.version}",
            )
    unit.session.add(
        StageTransition(
            model_version_id=version.id,
            from_stage=version.stage,
            to_stage=stage,
            actor_id=actor_id,
            reason=reason,
            approval_id=approval_id,
        )
    )
    unit.record(
        "model.stage",
        f"model:{project.name}/{name}@{version.version}",
        {"from": version.stage, "to": stage, "reason": reason[:200]},
    )
    version.stage = stage


def promote(
    unit: UnitOfWork,
    *,
    project: Project,
    name: str,
    number: int,
    target: str,
    policy_name: str | None,
    user_id: str,
) -> Approval:
    """Evaluate the gates and open the approval (or refuse, with every gate's result)."""
    if target not in ("staging", "production"):
        raise InvalidInput(f"promote to staging or production, not {target!r}")
    version = get_model_version(unit.session, project=project, name=name, version=number)
    if version.stage == target:
        raise Conflict(f"{name}@{number} is already in {target}")
    if version.stage == "archived":
        raise Conflict(
            f"{name}@{number} is archived; bring it back with 'bastion model rollback "
            f"{name} --to {number}' if it was in production before"
        )
    if pending_approval(unit.session, version) is not None:
        raise Conflict(f"{name}@{number} already has a pending promotion")
    chosen = policy_name or target
    policy = _policy(unit.session, project, chosen)
    card = model_card(unit.session, project=project, name=name, row=version)
    results = evaluate_gates(policy, card)
    failed = [r.gate for r in results if not r.passed]
    approval = Approval(
        project_id=project.id,
        model_version_id=version.id,
        target_stage=target,
        requested_by=user_id,
        policy=chosen,
        required_approvals=policy.required_approvals,
        gate_results=[r.model_dump() for r in results],
        status="failed" if failed else "pending",
    )
    unit.session.add(approval)
    unit.session.flush()
    unit.record(
        "model.promote",
        f"model:{project.name}/{name}@{number}",
        {
            "approval_id": approval.id,
            "target_stage": target,
            "policy": chosen,
            "gates": {r.gate: "pass" if r.passed else "fail" for r in results},
        },
    )
    if not failed and approval.required_approvals == 0:
        approval.status, approval.decided_at = "approved", utcnow()
        _set_stage(
            unit,
            project=project,
            name=name,
            version=version,
            stage=target,
            actor_id=user_id,
            reason=f"policy {chosen!r}: every gate passed; no approval required",
            approval_id=approval.id,
        )
    return approval


def decide(
    unit: UnitOfWork,
    *,
    project: Project,
    name: str,
    number: int,
    decision: str,
    comment: str,
    user_id: str,
    approval_id: str | None = None,
) -> Approval:
    """Record one reviewer's decision; enough distinct approvals move the version.

    (1) A pending promotion of this version must exist.
    (2) Separation of duties: the version's creator and the requester cannot decide.
    (3) Each reviewer decides once; a rejection closes the request.
    """
    version = get_model_version(unit.session, project=project, name=name, version=number)
    # (1) ...
    approval = pending_approval(unit.session, version)
    if approval is None or (approval_id is not None and approval.id != approval_id):
        raise Conflict(f"{name}@{number} has no pending promotion to decide")
    # (2) ...
    if user_id in {approval.requested_by, version.created_by}:
        raise SeparationOfDuties(
            f"separation of duties: the creator or requester of {name}@{number} cannot "
            "approve or reject its promotion"
        )
    # (3) ...
    already = unit.session.scalars(
        select(ApprovalDecision).where(
            ApprovalDecision.approval_id == approval.id, ApprovalDecision.user_id == user_id
        )
    ).first()
    if already is not None:
        raise Conflict(f"you already {already.decision} this promotion of {name}@{number}")
    unit.session.add(
        ApprovalDecision(
            approval_id=approval.id, user_id=user_id, decision=decision, comment=comment
        )
    )
    unit.session.flush()
    approvals = unit.session.scalar(
        select(func.count())
        .select_from(ApprovalDecision)
        .where(ApprovalDecision.approval_id == approval.id, ApprovalDecision.decision == "approved")
    )
    unit.record(
        f"approval.{decision}",
        f"model:{project.name}/{name}@{number}",
        {
            "approval_id": approval.id,
            "comment": comment[:500],
            "approvals": approvals or 0,
            "required": approval.required_approvals,
        },
    )
    if decision == "rejected":
        approval.status, approval.comment = "rejected", comment
    elif (approvals or 0) >= approval.required_approvals:
        approval.status, approval.comment = "approved", comment
    else:
        return approval
    approval.decided_by, approval.decided_at = user_id, utcnow()
    if approval.status == "approved":
        _set_stage(
            unit,
            project=project,
            name=name,
            version=version,
            stage=approval.target_stage,
            actor_id=user_id,
            reason=f"approved by {approvals} reviewer(s) under policy {approval.policy!r}",
            approval_id=approval.id,
        )
    return approval


def rollback(
    unit: UnitOfWork, *, project: Project, name: str, number: int, reason: str, user_id: str
) -> ModelVersion:
    """Put back in production a version that was approved for production before."""
    version = get_model_version(unit.session, project=project, name=name, version=number)
    if version.stage == "production":
        raise Conflict(f"{name}@{number} is already in production")
    was = unit.session.scalars(
        select(StageTransition).where(
            StageTransition.model_version_id == version.id,
            StageTransition.to_stage == "production",
        )
    ).first()
    if was is None:
        raise Conflict(
            f"{name}@{number} was never in production; promote it (gates and approval) instead"
        )
    _set_stage(
        unit,
        project=project,
        name=name,
        version=version,
        stage="production",
        actor_id=user_id,
        reason=f"rollback: {reason}" if reason else "rollback",
    )
    return version


def archive(
    unit: UnitOfWork, *, project: Project, name: str, number: int, reason: str, user_id: str
) -> ModelVersion:
    version = get_model_version(unit.session, project=project, name=name, version=number)
    if version.stage == "archived":
        raise Conflict(f"{name}@{number} is already archived")
    pending = pending_approval(unit.session, version)
    if pending is not None:
        pending.status, pending.decided_at = "withdrawn", utcnow()
    _set_stage(
        unit,
        project=project,
        name=name,
        version=version,
        stage="archived",
        actor_id=user_id,
        reason=reason or "archived",
    )
    return version


def history(session: Session, *, project: Project, name: str) -> list[dict[str, Any]]:
    """Every stage change of the model's versions, oldest first."""
    model = get_model(session, project=project, name=name)
    rows = session.execute(
        select(StageTransition, ModelVersion.version)
        .join(ModelVersion, ModelVersion.id == StageTransition.model_version_id)
        .where(ModelVersion.model_id == model.id)
        .order_by(StageTransition.created_at)
    ).all()
    return [
        {
            "version": number,
            "from_stage": row.from_stage,
            "to_stage": row.to_stage,
            "actor_id": row.actor_id,
            "reason": row.reason,
            "approval_id": row.approval_id,
            "created_at": row.created_at,
        }
        for row, number in rows
    ]


def list_approvals(session: Session, *, project: Project) -> list[Approval]:
    query = select(Approval).where(Approval.project_id == project.id)
    return list(session.scalars(query.order_by(Approval.created_at)))


def pending_approvals(session: Session, *, project: Project) -> list[tuple[Approval, str, int]]:
    """The project's approvals still waiting, oldest first, with their model's name and version."""
    rows = session.execute(
        select(Approval, Model.name, ModelVersion.version)
        .join(ModelVersion, ModelVersion.id == Approval.model_version_id)
        .join(Model, Model.id == ModelVersion.model_id)
        .where(Approval.project_id == project.id, Approval.status == "pending")
        .order_by(Approval.created_at)
    ).all()
    return [(approval, name, version) for approval, name, version in rows]


def approvals_of(session: Session, version: ModelVersion) -> list[Approval]:
    """Every approval asked for a version, newest first."""
    query = select(Approval).where(Approval.model_version_id == version.id)
    return list(session.scalars(query.order_by(Approval.created_at.desc())))
