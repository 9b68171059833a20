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
    "FederationIn",
    "FederationOut",
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


class FederationIn(Request):
    """What a participant of a federated run tells the others: the aggregator its
    ``address`` and ``certificate`` (its CA), a site its SuperNode's ``public_key``; either
    with its cluster's ``endorsement`` of that certificate or key."""

    address: Annotated[str, StringConstraints(max_length=300)] | None = None
    certificate: Annotated[str, StringConstraints(max_length=16_384)] | None = None
    public_key: Annotated[str, StringConstraints(max_length=2048)] | None = None
    #: The cluster's endorsement of the certificate or key (base64 ECDSA; its agent's).
    endorsement: Annotated[str, StringConstraints(max_length=200)] | None = None
    #: (Aggregator) fingerprints of node keys its SuperLink refused: audited, not stored.
    refused: list[Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]] | None = Field(
        default=None, max_length=100
    )


class FederationOut(Response):
    """A participant's view of its federated run: its status and, for a site, the
    aggregator's address and certificate; for the aggregator, each site's key and status."""

    run: str
    status: str
    member: str
    aggregator: dict[str, Any] | None = None
    sites: dict[str, dict[str, Any]] | None = None
