"""Deployments and serving keys (the key's token appears once, in the creation response)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from bastion.api.common import Name, Request, Response
from bastion.inference.config import ServeConfig
from bastion.patterns import DATASET_REF_PATTERN

__all__ = [
    "DeploymentIn",
    "DeploymentOut",
    "DeploymentUpdateIn",
    "ModelRef",
    "NewServingKeyOut",
    "Path",
    "ReplicaOut",
    "ScopeName",
    "ServeAuditIn",
    "ServingKeyIn",
    "ServingKeyOut",
]

ModelRef = Annotated[str, StringConstraints(pattern=DATASET_REF_PATTERN)]
Path = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
ScopeName = Literal["predict", "explain", "metrics"]


class DeploymentIn(Request):
    name: Name
    model: ModelRef
    cluster: Name
    host: Annotated[str, StringConstraints(min_length=1, max_length=255)] = "127.0.0.1"
    port: int = Field(default=8443, ge=1, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    redis_url: Annotated[str, StringConstraints(max_length=1024)] | None = None
    replicas: int = Field(default=1, ge=1, le=16)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    allow_unapproved: bool = False


class DeploymentUpdateIn(Request):
    model: ModelRef
    allow_unapproved: bool = False


class ReplicaOut(Response):
    run_id: str
    status: str
    message: str


class DeploymentOut(Response):
    id: str
    name: str
    model: str
    cluster: str
    run_id: str | None
    replicas: list[ReplicaOut]
    status: str
    status_reason: str
    unapproved: bool
    settings: dict[str, Any]
    history: list[int]
    created_at: dt.datetime
    stopped_at: dt.datetime | None


class ServingKeyIn(Request):
    scopes: list[ScopeName] = Field(min_length=1, max_length=3)
    rate: float | None = Field(default=None, gt=0, le=1_000_000)
    burst: int | None = Field(default=None, ge=1, le=10_000_000)
    quota: int | None = Field(default=None, ge=1, le=10_000_000_000)
    expires_in_seconds: int | None = Field(default=None, ge=60, le=5 * 365 * 24 * 3600)
    name: Annotated[str, StringConstraints(max_length=100)] = ""


class ServingKeyOut(Response):
    id: str
    name: str
    scopes: list[str]
    rate: float | None
    burst: int | None
    quota: int | None
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    created_at: dt.datetime


class NewServingKeyOut(ServingKeyOut):
    token: str


class ServeAuditIn(Request):
    events: list[dict[str, Any]] = Field(default_factory=list, max_length=5000)
    findings: list[dict[str, Any]] = Field(default_factory=list, max_length=100)
