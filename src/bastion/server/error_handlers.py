"""The one place where Bastion errors become HTTP responses: RFC 9457 problem details."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from bastion.errors import (
    BastionError,
    InvalidInput,
    NotAuthenticated,
    NotAuthorized,
    RateLimited,
    SeparationOfDuties,
    ServiceUnavailable,
)
from bastion.http_status import PROBLEM_JSON, problem, problem_details, status_for
from bastion.server.db.session import Database
from bastion.server.services import alerts
from bastion.server.web import is_dashboard, web_error

__all__ = ["install_error_handlers"]

log = logging.getLogger("bastion.server")


def _field(loc: tuple[object, ...]) -> str:
    return ".".join(str(part) for part in loc) or "request"


def _record_denial(request: Request, exc: NotAuthorized) -> None:
    """Audit a refusal of a known identity and raise the alerts it signals (never masks it)."""
    actor = getattr(request.state, "actor", None)
    if actor is None or isinstance(exc, NotAuthenticated | RateLimited):
        return
    database: Database = request.app.state.database
    try:
        with database.write(actor=actor) as unit:
            alerts.record_denial(
                unit,
                actor=actor,
                method=request.method,
                path=request.url.path,
                reason=str(exc),
                project=request.path_params.get("project"),
                self_approval=isinstance(exc, SeparationOfDuties),
                outside_project=bool(getattr(request.state, "outside_project", False)),
            )
    except (BastionError, DBAPIError) as failure:
        log.warning("could not record a refused request: %s", type(failure).__name__)


def _problem(
    status: int, body: dict[str, object], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BastionError)
    async def _bastion(request: Request, exc: BastionError) -> Response:
        status = status_for(exc)
        if isinstance(exc, NotAuthorized):
            await run_in_threadpool(_record_denial, request, exc)
        if is_dashboard(request.url.path):
            return web_error(request, status=status, message=str(exc))
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(exc.retry_after)
        return _problem(status, problem_details(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"field": _field(tuple(e.get("loc", ()))), "message": str(e.get("msg", "invalid"))}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        if is_dashboard(request.url.path):
            return web_error(request, status=422, message=summary)
        return _problem(422, problem(InvalidInput, status=422, detail=summary, errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if is_dashboard(request.url.path):
            return web_error(request, status=exc.status_code, message=str(exc.detail))
        # No Bastion error behind it (an unknown route, a wrong method): RFC 9457's plain kind.
        body = {
            "type": "about:blank",
            "title": HTTPStatus(exc.status_code).phrase,
            "status": exc.status_code,
            "detail": str(exc.detail),
        }
        return JSONResponse(
            body, status_code=exc.status_code, headers=exc.headers, media_type=PROBLEM_JSON
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    async def _database(_request: Request, exc: DBAPIError) -> JSONResponse:
        # The driver's message can quote SQL and parameters: log the class only.
        log.warning("database unavailable: %s", type(exc.orig).__name__)
        return _problem(
            503,
            problem(
                ServiceUnavailable,
                status=503,
                detail="the database is unavailable; nothing was changed, retry later",
            ),
            {"Retry-After": "5"},
        )
