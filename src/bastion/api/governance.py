"""Promotions, approvals, policies and alerts."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field

from bastion.api.common import (
    Name,
    Request,
    Response,
    Text,
)
from bastion.governance.policy import Policy as PolicyDocument

__all__ = [
    "AlertOut",
    "ApprovalOut",
    "CommentIn",
    "DecisionIn",
    "PolicyIn",
    "PolicyOut",
    "PromoteIn",
    "RollbackIn",
    "StageTransitionOut",
]


class PromoteIn(Request):
    to: Literal["staging", "production"] = "production"
    policy: Name | None = Field(default=None, description="Default: the policy named as `to`.")


class CommentIn(Request):
    comment: Text = ""


class RollbackIn(Request):
    to_version: int = Field(ge=1, le=10**9)
    reason: Text = ""


class StageTransitionOut(Response):
    version: int
    from_stage: str
    to_stage: str
    actor_id: str
    reason: str
    approval_id: str | None
    created_at: dt.datetime


class DecisionIn(Request):
    decision: Literal["approved", "rejected"]
    comment: Text = ""


class ApprovalOut(Response):
    id: str
    model_version_id: str
    target_stage: str
    status: str
    policy: str
    required_approvals: int
    gate_results: list[dict[str, Any]]
    requested_by: str
    comment: str
    created_at: dt.datetime
    decided_at: dt.datetime | None


class PolicyIn(Request):
    document: PolicyDocument


class PolicyOut(Response):
    name: str
    document: dict[str, Any]
    updated_at: dt.datetime


class AlertOut(Response):
    id: str
    kind: str
    actor: str
    project: str | None
    details: dict[str, Any]
    created_at: dt.datetime
    acknowledged_by: str | None
    acknowledged_at: dt.datetime | None
