"""GDPR erasure requests and retention holds."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, status

from bastion.api.datasets import DatasetVersionOut, ErasureIn, ErasureOut, HoldIn
from bastion.security.keys import load_keyring
from bastion.server.deps import DatabaseDep, NamePath, Principal, require
from bastion.server.permissions import Permission
from bastion.server.services import datasets, privacy

__all__ = ["router"]

router = APIRouter(tags=["privacy"])


@router.post(
    "/projects/{project}/privacy/erasures",
    response_model=ErasureOut,
    status_code=status.HTTP_201_CREATED,
)
def request_erasure(
    project: str,
    body: ErasureIn,
    request: Request,
    principal: Annotated[Principal, require(Permission.PRIVACY_ERASE)],
    database: DatabaseDep,
) -> dict[str, Any]:
    """Erase a data subject from every dataset version (GDPR Art. 17); runs one job each."""
    keyring = load_keyring(request.app.state.settings)
    with database.write(actor=principal.actor) as unit:
        made = privacy.request_erasure(
            unit,
            project=principal.require_project(),
            subject_id=body.subject_id,
            reason=body.reason,
            user_id=principal.identity.user_id,
            keyring=keyring,
            locate=body.locate,
        )
        return privacy.erasure_view(unit.session, made)


@router.get("/projects/{project}/privacy/erasures", response_model=list[ErasureOut])
def list_erasures(
    project: str,
    principal: Annotated[Principal, require(Permission.PRIVACY_READ)],
    database: DatabaseDep,
) -> list[dict[str, Any]]:
    """The project's erasure and locate requests, newest first (the latest 200)."""
    with database.read() as session:
        return privacy.erasure_register(session, project=principal.require_project())


@router.get("/projects/{project}/privacy/erasures/{erasure_id}", response_model=ErasureOut)
def get_erasure(
    project: str,
    erasure_id: str,
    principal: Annotated[Principal, require(Permission.PRIVACY_READ)],
    database: DatabaseDep,
) -> dict[str, Any]:
    """An erasure request: status, rows removed per version, new versions, shredding."""
    with database.read() as session:
        found = privacy.get_erasure(
            session, project=principal.require_project(), erasure_id=erasure_id
        )
        return privacy.erasure_view(session, found)


@router.put(
    "/projects/{project}/datasets/{name}/versions/{version}/hold",
    response_model=DatasetVersionOut,
)
def set_hold(
    project: str,
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=10**9)],
    body: HoldIn,
    principal: Annotated[Principal, require(Permission.PRIVACY_ERASE)],
    database: DatabaseDep,
) -> dict[str, Any]:
    """Set a retention hold (an erasure then keeps the version's keys); empty releases it."""
    with database.write(actor=principal.actor) as unit:
        row = privacy.set_hold(
            unit,
            project=principal.require_project(),
            name=name,
            version=version,
            reason=body.reason,
        )
        return datasets.version_view(unit.session, row)
