"""Users' code packages: push (sealed to a cluster), versions with their file hashes, reviews.

The control plane keeps each version's name, file list and hashes and who pushed it, never
the code's text: the archive arrives sealed to the cluster's HPKE key.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from bastion.api.common import Name, Request, Response, RunId, Text

__all__ = [
    "CodeFile",
    "CodePackageOut",
    "CodePushIn",
    "CodeRecordIn",
    "CodeReviewIn",
    "CodeReviewOut",
    "CodeStatus",
    "CodeVersionOut",
]

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
#: A version is pending until its cluster's agent checked and sealed it, then registered;
#: refused when the agent refused it (the register run's reason says why).
CodeStatus = Literal["pending", "registered", "refused"]
#: The sealed archive travels base64-encoded in one request.
MAX_SEALED_CHARS = 900_000


class CodeFile(Request):
    path: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    sha256: Sha256
    size: int = Field(ge=0, le=1 << 30)


class CodePushIn(Request):
    name: Name
    cluster: Name = Field(description="The cluster whose agent checks, seals and keeps it.")
    files: list[CodeFile] = Field(min_length=1, max_length=1000)
    archive_sha256: Sha256 = Field(description="SHA-256 of the archive before sealing.")
    sealed: Annotated[str, StringConstraints(min_length=1, max_length=MAX_SEALED_CHARS)] = Field(
        description="The archive sealed to the cluster's HPKE public key (base64)."
    )


class CodeRecordIn(Request):
    """(Agent) what it checked and sealed for a pushed version."""

    run_id: RunId
    manifest_hash: Sha256
    signature: Annotated[str, StringConstraints(min_length=1, max_length=100_000)]
    files: list[CodeFile] = Field(min_length=1, max_length=1000)
    archive_sha256: Sha256


class CodeReviewIn(Request):
    verdict: Literal["approved", "rejected"]
    comment: Text = ""


class CodeReviewOut(Response):
    reviewer: str
    verdict: str
    comment: str
    created_at: dt.datetime


class CodeVersionOut(Response):
    name: str
    version: int
    cluster: str
    status: CodeStatus
    status_reason: str = ""
    files: list[CodeFile]
    archive_sha256: str
    manifest_hash: str | None
    pushed_by: str
    run_id: str | None
    created_at: dt.datetime
    reviews: list[CodeReviewOut] = Field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class CodePackageOut(Response):
    name: str
    versions: int
    latest: CodeVersionOut | None
    created_at: dt.datetime
