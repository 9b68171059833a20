"""Runs and what their jobs report: events, logs, metrics, results."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from bastion.api.common import (
    JsonObject,
    Request,
    Response,
    RunStatus,
    Stage,
    Text,
)

__all__ = [
    "LogLineOut",
    "LogsIn",
    "MetricIn",
    "MetricOut",
    "ResultIn",
    "RunEventIn",
    "RunEventOut",
    "RunOut",
]


class RunOut(Response):
    id: str
    name: str
    status: str
    status_reason: str
    attempt: int
    spec: dict[str, Any]
    result: dict[str, Any] | None = None
    created_at: dt.datetime
    updated_at: dt.datetime
    isolation: str | None = Field(
        default=None,
        description="How its attempts ran: bubblewrap (sandboxed), none (an attempt ran "
        "unsandboxed), or null (not run yet, or run before the sandbox existed).",
    )


class LogsIn(Request):
    lines: Annotated[
        list[Annotated[str, StringConstraints(max_length=10000)]],
        Field(min_length=1, max_length=1000),
    ]


class LogLineOut(Response):
    id: int
    attempt: int
    ts: dt.datetime
    line: str


class RunEventIn(Request):
    stage: Stage
    status: RunStatus
    message: Text = ""


class RunEventOut(Response):
    ts: dt.datetime
    stage: str
    status: str
    message: str


class MetricIn(Request):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_./-]{1,100}$")]
    step: int = Field(ge=0, le=10**9)
    value: float = Field(allow_inf_nan=False)


class MetricOut(Response):
    name: str
    step: int
    value: float
    ts: dt.datetime


class ResultIn(Request):
    result: JsonObject
