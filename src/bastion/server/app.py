"""The control plane's FastAPI application."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI

from bastion import __version__
from bastion.config import Settings
from bastion.db import create_db_engine
from bastion.security.audit_log import AuditLog, CheckpointTimer, KeyringCheckpointSigner
from bastion.security.keys import load_keyring
from bastion.server.db.session import Database
from bastion.server.deps import Principal, require
from bastion.server.error_handlers import install_error_handlers
from bastion.server.idempotency import IdempotencyMiddleware
from bastion.server.login_throttle import LoginThrottle
from bastion.server.middleware import BodyLimitMiddleware, SecurityHeadersMiddleware
from bastion.server.openapi import ERROR_RESPONSES, problem_openapi
from bastion.server.permissions import Permission
from bastion.server.routes import (
    agents,
    audit,
    clusters,
    code,
    datasets,
    deployments,
    governance,
    identity,
    models,
    privacy,
    projects,
    runs,
)
from bastion.server.web import install_dashboard

__all__ = ["API_PREFIX", "PUBLIC_ROUTES", "bind_state", "build_database", "create_app"]

API_PREFIX = "/api/v1"
#: The only routes reachable without a token.
PUBLIC_ROUTES = frozenset(
    {("GET", "/healthz"), ("POST", "/api/v1/auth/login"), ("POST", "/api/v1/agents/join")}
)


def build_database(settings: Settings, *, url: str | None = None) -> Database:
    """The control-plane database, its audit log signing checkpoints with this home's keyring."""
    engine = create_db_engine(url or settings.control_plane_database)
    keyring = load_keyring(settings)
    audit_log = AuditLog(
        engine,
        signer=KeyringCheckpointSigner(keyring),
        trusted_keys=[key.public_pem for key in keyring.signing_keys()],
        checkpoint_interval=settings.audit_checkpoint_interval,
        anchor_path=settings.home_dir / "control-plane-audit-anchor.json",
        create_schema=False,
    )
    return Database(
        engine,
        audit_log,
        auth_cache_seconds=settings.auth_cache_seconds,
        audit_whole_every=dt.timedelta(minutes=settings.audit_whole_verify_minutes),
    )


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Sign the audit head at start-up, on a timer while events arrive, and at shutdown;
    verify the whole audit chain in the background at start-up."""
    settings: Settings = app.state.settings
    timer = CheckpointTimer(app.state.database.audit, every=settings.audit_checkpoint_seconds)
    timer.start()
    # The dashboard's audit page resumes from what this verification reaches.
    whole = app.state.database.start_verification()
    try:
        yield
    finally:
        timer.stop()
        whole.join(timeout=30)


def bind_state(app: FastAPI, *, settings: Settings, database: Database) -> None:
    """Point ``app`` at its settings and database, with a login throttle of its own: all an
    app's routes read at request time. The routes themselves depend on neither."""
    app.state.settings = settings
    app.state.database = database
    app.state.login_throttle = LoginThrottle(
        max_failures=settings.login_max_failures, window_seconds=settings.login_window_seconds
    )


def create_app(settings: Settings | None = None, *, database: Database | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="Bastion control plane",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served behind authentication below
        lifespan=_lifespan,
    )
    bind_state(app, settings=settings, database=database or build_database(settings))
    install_error_handlers(app)
    app.add_middleware(IdempotencyMiddleware)  # inside the body limit: bodies come bounded
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_bytes)
    app.add_middleware(SecurityHeadersMiddleware)

    api = APIRouter(prefix=API_PREFIX, responses=ERROR_RESPONSES)
    for router in (
        identity.router,
        projects.router,
        clusters.router,
        runs.router,
        datasets.router,
        models.router,
        governance.router,
        privacy.router,
        audit.router,
        deployments.router,
        code.router,
    ):
        api.include_router(router)

    @api.get("/openapi.json", include_in_schema=False)
    def openapi(_: Annotated[Principal, require(Permission.SELF_READ)]) -> dict[str, Any]:
        return app.openapi()

    app.include_router(identity.public, responses=ERROR_RESPONSES)
    app.include_router(agents.router, responses=ERROR_RESPONSES)
    app.include_router(api)
    install_dashboard(app)
    app.openapi = problem_openapi(app)  # type: ignore[method-assign]
    return app
