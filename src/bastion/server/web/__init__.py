"""The dashboard: server-rendered pages for reviewers, auditors and data stewards.

Pages are Jinja templates rendered by the control plane; the only script is a small
static file that refreshes a run's live region. Sessions, CSRF and the page
permission check live in :mod:`bastion.server.web.session`.

Pages read through the same services the API's routes call; no queries of their own.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from bastion.server.web import (
    audit_pages,
    auth_pages,
    deployment_pages,
    model_pages,
    project_pages,
)
from bastion.server.web.errors import web_error
from bastion.server.web.render import WEB_PREFIX

__all__ = ["PUBLIC_PAGES", "WEB_PREFIX", "install_dashboard", "is_dashboard", "web_error"]

#: The dashboard routes reachable without a session (besides its static files).
PUBLIC_PAGES = auth_pages.PUBLIC | {("GET", "/")}


def is_dashboard(path: str) -> bool:
    return path == WEB_PREFIX or path.startswith(f"{WEB_PREFIX}/")


def install_dashboard(app: FastAPI) -> None:
    """Add the dashboard's pages, its static files, and ``/`` leading to it."""
    for module in (auth_pages, project_pages, model_pages, deployment_pages, audit_pages):
        app.include_router(module.router)
    app.mount(
        f"{WEB_PREFIX}/static",
        StaticFiles(packages=[("bastion.server.web", "static")]),
        name="dashboard-static",
    )

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse(f"{WEB_PREFIX}/", status_code=303)
