"""Logging in and out of the dashboard, and the list of projects a user can open."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bastion.errors import RateLimited
from bastion.security.credentials import parse_token
from bastion.server.deps import DatabaseDep, Principal
from bastion.server.permissions import Permission
from bastion.server.routes.identity import password_login
from bastion.server.services import identity
from bastion.server.services import projects as project_service
from bastion.server.web.render import WEB_PREFIX, page
from bastion.server.web.session import (
    SESSION_COOKIE,
    check_login_nonce,
    clear_session,
    new_login_nonce,
    remember_login_nonce,
    require_page,
    session_credentials,
    set_session,
)

__all__ = ["PUBLIC", "router"]

router = APIRouter(prefix=WEB_PREFIX, include_in_schema=False)
#: The dashboard routes reachable without a session.
PUBLIC = frozenset({("GET", f"{WEB_PREFIX}/login"), ("POST", f"{WEB_PREFIX}/login")})

_MAX_USERNAME = 64
_MAX_PASSWORD = 256


def _local(target: str) -> str:
    """Where to go after logging in: only a dashboard path of this site."""
    if target.startswith(f"{WEB_PREFIX}/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{WEB_PREFIX}/"


def _login_page(
    request: Request, *, error: str = "", status: int = 200, after: str = ""
) -> Response:
    nonce = new_login_nonce()
    response = page(
        request, "login.html.j2", status=status, error=error, after=_local(after), nonce=nonce
    )
    remember_login_nonce(response, nonce)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, after: str = "") -> Response:
    return _login_page(request, after=after)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    database: DatabaseDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    nonce: Annotated[str, Form()] = "",
    after: Annotated[str, Form()] = "",
) -> Response:
    """Check the password; on success start a new session (never reuse a presented one)."""
    if not check_login_nonce(request, nonce):
        return _login_page(
            request, error="the login form expired; please try again", status=403, after=after
        )
    if not username or len(username) > _MAX_USERNAME or len(password) > _MAX_PASSWORD:
        return _login_page(request, error="wrong username or password", status=401, after=after)
    try:
        result = password_login(
            request,
            database,
            username=username,
            password=password,
            # Session fixation: a session presented at login is ended, never adopted.
            ending=parse_token(request.cookies.get(SESSION_COOKIE, "")),
        )
    except RateLimited as refused:
        return _login_page(request, error=str(refused), status=429, after=after)
    if result is None:
        return _login_page(request, error="wrong username or password", status=401, after=after)
    response = RedirectResponse(_local(after), status_code=303)
    set_session(response, result[1], hours=request.app.state.settings.session_token_hours)
    return response


@router.post("/logout")
def logout(
    request: Request,
    _: Annotated[Principal, require_page(Permission.SELF_READ)],
    database: DatabaseDep,
) -> Response:
    token_id, secret = session_credentials(request)
    with database.write(actor="anonymous") as unit:
        identity.end_session(unit, token_id=token_id, secret=secret)
    response = RedirectResponse(f"{WEB_PREFIX}/login", status_code=303)
    clear_session(response)
    return response


@router.get("/", response_class=HTMLResponse)
def projects(
    request: Request,
    principal: Annotated[Principal, require_page(Permission.PROJECTS_LIST)],
    database: DatabaseDep,
) -> Response:
    with database.read() as session:
        rows = project_service.list_projects(session, caller=principal.identity)
        listed = [{"name": p.name, "description": p.description} for p in rows]
    return page(request, "projects.html.j2", projects=listed)
