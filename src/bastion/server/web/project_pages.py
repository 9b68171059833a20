"""A project's pages: overview (with alert acknowledgement), runs (with the live log tail),
datasets, promotion policies and the register of erasure requests."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bastion.api.governance import CommentIn
from bastion.governance.policy import parse_policy
from bastion.server.deps import DatabaseDep, Principal
from bastion.server.permissions import Permission, allowed
from bastion.server.services import alerts, governance, privacy
from bastion.server.web import views
from bastion.server.web.forms import FormText, parse_form
from bastion.server.web.render import WEB_PREFIX, page
from bastion.server.web.session import require_page

__all__ = ["router"]

router = APIRouter(prefix=f"{WEB_PREFIX}/p/{{project}}", include_in_schema=False)


@router.get("", response_class=HTMLResponse)
def overview(
    project: str,
    request: Request,
    principal: Annotated[Principal, require_page(Permission.PROJECT_READ)],
    database: DatabaseDep,
) -> Response:
    with database.read() as session:
        found = views.overview(
            session,
            project=principal.require_project(),
            clusters=allowed(Permission.CLUSTERS_READ, principal.roles),
            alerts=allowed(Permission.ALERTS_READ, principal.roles),
        )
    return page(request, "overview.html.j2", project=project, actor=principal.actor, **found)


@router.post("/alerts/{alert_id}/acknowledge")
def acknowledge_alert(
    project: str,
    alert_id: Annotated[str, Path(max_length=32)],
    principal: Annotated[Principal, require_page(Permission.ALERTS_WRITE)],
    database: DatabaseDep,
    comment: FormText = "",
) -> Response:
    """Acknowledge an open alert of this project (or a global one) with a note; never one
    about oneself. Acknowledging is an administrator's global permission, so the project
    in the path only narrows which alerts this page's form may reach."""
    body = parse_form(CommentIn, {"comment": comment})
    with database.write(actor=principal.actor) as unit:
        alerts.acknowledge(
            unit,
            alert_id=alert_id,
            actor=principal.actor,
            note=body.comment,
            project=project,
        )
    return RedirectResponse(f"{WEB_PREFIX}/p/{project}", status_code=303)


@router.get("/runs", response_class=HTMLResponse)
def runs(
    project: str,
    request: Request,
    principal: Annotated[Principal, require_page(Permission.RUNS_READ)],
    database: DatabaseDep,
) -> Response:
    with database.read() as session:
        listed = views.runs(session, project=principal.require_project(), limit=200)
    return page(request, "runs.html.j2", project=project, runs=listed)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run(
    project: str,
    run_id: str,
    request: Request,
    principal: Annotated[Principal, require_page(Permission.RUNS_READ)],
    database: DatabaseDep,
    part: Annotated[Literal["page", "live"], Query()] = "page",
) -> Response:
    """The run page; ``part=live`` is the region that changes, which the page polls while
    the run is active."""
    with database.read() as session:
        found = views.run_live(session, project=principal.require_project(), run_id=run_id)
    template = "run.html.j2" if part == "page" else "run_live.html.j2"
    return page(request, template, project=project, **found)


@router.get("/policies", response_class=HTMLResponse)
def policies(
    project: str,
    request: Request,
    principal: Annotated[Principal, require_page(Permission.POLICIES_READ)],
    database: DatabaseDep,
) -> Response:
    """The project's promotion policies and their gates (saved with ``bastion policy put``)."""
    with database.read() as session:
        found = governance.list_policies(session, project=principal.require_project())
        # As the gates apply them: with their defaults (a robustness gate's attack ...).
        listed = [
            {
                "name": p.name,
                "document": parse_policy(p.document, source=f"policy {p.name!r}").model_dump(
                    mode="json", exclude_none=True
                ),
                "updated_at": p.updated_at,
            }
            for p in found
        ]
    return page(request, "policies.html.j2", project=project, policies=listed)


@router.get("/privacy", response_class=HTMLResponse)
def privacy_requests(
    project: str,
    request: Request,
    principal: Annotated[Principal, require_page(Permission.PRIVACY_READ)],
    database: DatabaseDep,
) -> Response:
    """The register of erasure and locate requests (GDPR Art. 17 and 15), newest first."""
    with database.read() as session:
        requests = privacy.erasure_register(session, project=principal.require_project())
    return page(request, "privacy.html.j2", project=project, requests=requests)


@router.get("/datasets", response_class=HTMLResponse)
def datasets(
    project: str,
    request: Request,
    principal: Annotated[Principal, require_page(Permission.DATASETS_READ)],
    database: DatabaseDep,
) -> Response:
    with database.read() as session:
        listed = views.datasets_page(session, project=principal.require_project())
    return page(request, "datasets.html.j2", project=project, datasets=listed)


@router.get("/datasets/{name}", response_class=HTMLResponse)
def dataset(
    project: str,
    name: str,
    request: Request,
    principal: Annotated[Principal, require_page(Permission.DATASETS_READ)],
    database: DatabaseDep,
) -> Response:
    with database.read() as session:
        versions = views.dataset_page(session, project=principal.require_project(), name=name)
    return page(request, "dataset.html.j2", project=project, name=name, versions=versions)
