"""A project's pages: overview, runs (with the live log tail) and datasets."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from bastion.server.deps import DatabaseDep, Principal
from bastion.server.permissions import Permission, allowed
from bastion.server.web import views
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
    return page(request, "overview.html.j2", project=project, **found)


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
