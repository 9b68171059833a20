"""Projects and memberships."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from bastion.api.common import Name, Request, Response, Text

__all__ = ["MembershipIn", "MembershipOut", "ProjectIn", "ProjectOut", "ProjectRole"]

ProjectRole = Literal["admin", "data-steward", "ml-engineer", "reviewer", "auditor", "serving"]


class ProjectIn(Request):
    name: Name
    description: Text = ""


class ProjectOut(Response):
    id: str
    name: str
    description: str
    created_at: dt.datetime


class MembershipIn(Request):
    role: ProjectRole


class MembershipOut(Response):
    username: str
    role: str
    created_at: dt.datetime
