"""Registered models, their versions, evaluations, export and import."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from bastion.api.common import (
    JsonObject,
    Name,
    Request,
    Response,
    RunId,
)
from bastion.evaluate.config import EvaluateConfig

__all__ = [
    "EvaluateIn",
    "EvaluationOut",
    "ExportIn",
    "ImportIn",
    "ModelIn",
    "ModelOut",
    "ModelVersionIn",
    "ModelVersionOut",
]


class ModelIn(Request):
    name: Name


class ModelOut(Response):
    id: str
    name: str
    created_at: dt.datetime


class ExportIn(Request):
    to_cluster: Name


class EvaluateIn(Request):
    evaluate: EvaluateConfig


class EvaluationOut(Response):
    id: str
    kind: str
    run_id: str
    summary: dict[str, Any]
    created_at: dt.datetime


class ImportIn(Request):
    cluster: Name
    source: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class ModelVersionIn(Request):
    """What the agent reports after sealing a trained model: metadata, never weights."""

    run_id: RunId
    manifest_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    signature: Annotated[str, StringConstraints(max_length=20000)]
    evidence: JsonObject = Field(default_factory=dict)


class ModelVersionOut(Response):
    id: str
    version: int
    stage: str
    evidence: dict[str, Any]
    flags: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = None
    manifest_hash: str | None = None
    created_at: dt.datetime
