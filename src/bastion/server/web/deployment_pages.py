"""Deployments: status, replicas, hot-swap history and serving keys; revoke a key, stop.

Revoking a key and stopping a deployment call the same services as the API and the CLI;
a revoked key stops working on the servers within their key-sync interval.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bastion.server.deps import DatabaseDep, Principal
from bastion.server.permissions import Permission
from bastion.server.services import deployments as service
from bastion.server.web.render import WEB_PREFIX, page
from bastion.server.web.session import require_page

__all__ = ["router"]

router = APIRouter(prefix=f"{WEB_PREFIX}/p/{{project}}/deployments", include_in_schema=False)
Name = Annotated[str, Path(max_length=64)]
KeyId = Annotated[str, Path(max_length=32)]


def _back(project: str, name: str) -> RedirectResponse:
    return RedirectResponse(f"{WEB_PREFIX}/p/{project}/deployments/{name}", status_code=303)


@router.get("/{name}", response_class=HTMLResponse)
def deployment(
    project: str,
    name: Name,
    request: Request,
    principal: Annotated[Principal, require_page(Permission.DEPLOYMENTS_READ)],
    database: DatabaseDep,
) -> Response:
    """The deployment and its serving keys (never their secrets)."""
    with database.read() as session:
        found = service.get_deployment(session, project=principal.require_project(), name=name)
        described = service.describe(session, found)
        keys = service.list_keys(session, project=principal.require_project(), deployment=name)
    return page(request, "deployment.html.j2", project=project, d=described, keys=keys)


@router.post("/{name}/keys/{key_id}/revoke")
def revoke_key(
    project: str,
    name: Name,
    key_id: KeyId,
    principal: Annotated[Principal, require_page(Permission.SERVING_KEYS_WRITE)],
    database: DatabaseDep,
) -> Response:
    with database.write(actor=principal.actor) as unit:
        service.revoke_key(
            unit, project=principal.require_project(), deployment=name, key_id=key_id
        )
    return _back(project, name)


@router.post("/{name}/stop")
def stop(
    project: str,
    name: Name,
    principal: Annotated[Principal, require_page(Permission.DEPLOYMENTS_WRITE)],
    database: DatabaseDep,
) -> Response:
    with database.write(actor=principal.actor) as unit:
        service.stop_deployment(unit, project=principal.require_project(), name=name)
    return _back(project, name)
