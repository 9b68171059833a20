"""Promotion of model versions (gates, approvals, stages), policies, lineage."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from bastion.api.governance import (
    ApprovalOut,
    CommentIn,
    DecisionIn,
    PolicyIn,
    PolicyOut,
    PromoteIn,
    RollbackIn,
    StageTransitionOut,
)
from bastion.api.models import ModelVersionOut
from bastion.errors import NotFound
from bastion.server.db.models import Approval, Model, ModelVersion, Policy
from bastion.server.db.session import Database
from bastion.server.deps import DatabaseDep, NamePath, Principal, require
from bastion.server.permissions import Permission
from bastion.server.services import governance as governance_service
from bastion.server.services import lineage

__all__ = ["router"]

router = APIRouter(tags=["governance"])


@router.get("/projects/{project}/approvals", response_model=list[ApprovalOut])
def list_approvals(
    project: str,
    principal: Annotated[Principal, require(Permission.APPROVALS_READ)],
    database: DatabaseDep,
) -> list[Approval]:
    with database.read() as session:
        return governance_service.list_approvals(session, project=principal.require_project())


@router.post("/projects/{project}/approvals/{approval_id}/decision", response_model=ApprovalOut)
def decide_approval(
    project: str,
    approval_id: str,
    body: DecisionIn,
    principal: Annotated[Principal, require(Permission.APPROVALS_DECIDE)],
    database: DatabaseDep,
) -> Approval:
    """Decide a pending promotion by its id (the same rules as approve / reject)."""
    with database.write(actor=principal.actor) as unit:
        project_row = principal.require_project()
        approval = unit.session.get(Approval, approval_id)
        version = unit.session.get(ModelVersion, approval.model_version_id) if approval else None
        model = unit.session.get(Model, version.model_id) if version else None
        if approval is None or approval.project_id != project_row.id or not version or not model:
            raise NotFound(f"approval {approval_id} does not exist in project {project!r}")
        return governance_service.decide(
            unit,
            project=project_row,
            name=model.name,
            number=version.version,
            decision=body.decision,
            comment=body.comment,
            user_id=principal.identity.user_id,
            approval_id=approval_id,
        )


_VERSION = "/projects/{project}/models/{name}/versions/{version}"


@router.post(_VERSION + "/promote", response_model=ApprovalOut, status_code=201)
def promote_model_version(
    project: str,
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=10**9)],
    body: PromoteIn,
    principal: Annotated[Principal, require(Permission.APPROVALS_REQUEST)],
    database: DatabaseDep,
) -> Approval:
    """Evaluate every gate of the policy; open the approval when all pass.

    The returned approval says ``failed`` (with each gate's result) when a gate failed.
    """
    with database.write(actor=principal.actor) as unit:
        return governance_service.promote(
            unit,
            project=principal.require_project(),
            name=name,
            number=version,
            target=body.to,
            policy_name=body.policy,
            user_id=principal.identity.user_id,
        )


def _decide(
    decision: str, principal: Principal, database: Database, name: str, version: int, comment: str
) -> Approval:
    with database.write(actor=principal.actor) as unit:
        return governance_service.decide(
            unit,
            project=principal.require_project(),
            name=name,
            number=version,
            decision=decision,
            comment=comment,
            user_id=principal.identity.user_id,
        )


@router.post(_VERSION + "/approve", response_model=ApprovalOut)
def approve_model_version(
    project: str,
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=10**9)],
    body: CommentIn,
    principal: Annotated[Principal, require(Permission.APPROVALS_DECIDE)],
    database: DatabaseDep,
) -> Approval:
    """Approve the pending promotion (never the version's creator or the requester)."""
    return _decide("approved", principal, database, name, version, body.comment)


@router.post(_VERSION + "/reject", response_model=ApprovalOut)
def reject_model_version(
    project: str,
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=10**9)],
    body: CommentIn,
    principal: Annotated[Principal, require(Permission.APPROVALS_DECIDE)],
    database: DatabaseDep,
) -> Approval:
    """Reject the pending promotion; the request closes."""
    return _decide("rejected", principal, database, name, version, body.comment)


@router.post(_VERSION + "/archive", response_model=ModelVersionOut)
def archive_model_version(
    project: str,
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=10**9)],
    body: CommentIn,
    principal: Annotated[Principal, require(Permission.MODELS_WRITE)],
    database: DatabaseDep,
) -> ModelVersion:
    """Archive a version (a pending promotion of it is withdrawn)."""
    with database.write(actor=principal.actor) as unit:
        return governance_service.archive(
            unit,
            project=principal.require_project(),
            name=name,
            number=version,
            reason=body.comment,
            user_id=principal.identity.user_id,
        )


@router.post("/projects/{project}/models/{name}/rollback", response_model=ModelVersionOut)
def rollback_model(
    project: str,
    name: NamePath,
    body: RollbackIn,
    principal: Annotated[Principal, require(Permission.APPROVALS_DECIDE)],
    database: DatabaseDep,
) -> ModelVersion:
    """Put back in production a version that was approved for production before."""
    with database.write(actor=principal.actor) as unit:
        return governance_service.rollback(
            unit,
            project=principal.require_project(),
            name=name,
            number=body.to_version,
            reason=body.reason,
            user_id=principal.identity.user_id,
        )


@router.get("/projects/{project}/lineage")
def project_lineage(
    project: str,
    principal: Annotated[Principal, require(Permission.MODELS_READ)],
    database: DatabaseDep,
    node: Annotated[
        str,
        Query(
            pattern=r"^((dataset|model):[a-z0-9][a-z0-9._-]{0,63}@[1-9][0-9]{0,8}|run:[0-9a-f]{32})$",
            description="dataset:NAME@V, model:NAME@V or run:ID",
        ),
    ],
) -> dict[str, Any]:
    """Dataset versions, runs and model versions connected to ``node`` (a graph)."""
    with database.read() as session:
        return lineage.lineage(session, project=principal.require_project(), node=node)


@router.get("/projects/{project}/models/{name}/history", response_model=list[StageTransitionOut])
def model_history(
    project: str,
    name: NamePath,
    principal: Annotated[Principal, require(Permission.MODELS_READ)],
    database: DatabaseDep,
) -> list[dict[str, Any]]:
    """Every stage change of the model's versions, oldest first (never overwritten)."""
    with database.read() as session:
        return governance_service.history(session, project=principal.require_project(), name=name)


@router.get("/projects/{project}/policies", response_model=list[PolicyOut])
def list_policies(
    project: str,
    principal: Annotated[Principal, require(Permission.POLICIES_READ)],
    database: DatabaseDep,
) -> list[Policy]:
    with database.read() as session:
        return governance_service.list_policies(session, project=principal.require_project())


@router.put("/projects/{project}/policies/{name}", response_model=PolicyOut)
def put_policy(
    project: str,
    name: NamePath,
    body: PolicyIn,
    principal: Annotated[Principal, require(Permission.POLICIES_WRITE)],
    database: DatabaseDep,
) -> Policy:
    """Save a policy; unknown gates and empty policies are refused."""
    with database.write(actor=principal.actor) as unit:
        return governance_service.put_policy(
            unit,
            project=principal.require_project(),
            name=name,
            document=body.document.model_dump(mode="json", exclude_unset=True),
            user_id=principal.identity.user_id,
        )
