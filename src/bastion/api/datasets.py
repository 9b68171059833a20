"""Datasets: names, versions (metadata the compute plane reports) and data-job requests."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, StringConstraints

from bastion.api.common import Name, Request, Response, Text

__all__ = [
    "DatasetIn",
    "DatasetOut",
    "DatasetVersionIn",
    "DatasetVersionOut",
    "PseudonymizeIn",
    "RegisterIn",
    "SchemaIn",
    "VersionJobIn",
]

Hash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
RunId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Column = Annotated[str, StringConstraints(min_length=1, max_length=200)]
JsonObject = Annotated[dict[str, Any], Field(max_length=200)]


class DatasetIn(Request):
    name: Name


class DatasetOut(Response):
    id: str
    name: str
    created_at: dt.datetime


class DatasetVersionIn(Request):
    """What the agent reports after sealing a version: metadata, never rows."""

    run_id: RunId
    schema_: JsonObject = Field(alias="schema")
    row_count: int = Field(ge=0)
    manifest_hash: Hash
    signature: Annotated[str, StringConstraints(max_length=20000)]
    summaries: JsonObject = Field(default_factory=dict)
    #: An erasure run: whether the agent shredded the version it was made from.
    shredded_parent: bool = False


class DatasetVersionOut(Response):
    version: int
    #: ``schema`` on the wire; the control plane fills it from its ``schema_`` column.
    schema_: dict[str, Any] = Field(
        validation_alias=AliasChoices("schema_", "schema"), serialization_alias="schema"
    )
    row_count: int
    manifest_hash: str
    signature: str
    summaries: dict[str, Any]
    purpose: str
    target: str | None
    subject_id_column: str | None
    parent_version: int | None
    shredded_at: dt.datetime | None = None
    retention_hold: str = ""
    cluster: str | None = None
    run_id: str | None
    schema_edited: bool = False
    created_at: dt.datetime


class HoldIn(Request):
    """A retention hold's reason (legal, regulatory); empty releases the hold."""

    reason: Annotated[str, StringConstraints(max_length=2000)] = ""


class ErasureIn(Request):
    """A data subject's erasure request. The subject id is sealed to each cluster and kept
    only as a keyed pseudonym; it is never stored or logged in the clear."""

    subject_id: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    locate: bool = Field(
        default=False, description="Only find where the subject is (lineage); change nothing."
    )


class ErasureOut(Response):
    id: str
    mode: str
    subject: str
    reason: str
    requested_by: str
    status: str
    runs: list[str]
    rows_removed: int
    results: dict[str, Any]
    models_flagged: list[str]
    downstream: dict[str, list[str]]
    created_at: dt.datetime


class RegisterIn(Request):
    """Register a file that lives on the cluster's host (the path is the agent's)."""

    cluster: Name
    source: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    target: Column | None = None
    subject_id_column: Column | None = None
    purpose: Text = ""
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None,
        description="The file's SHA-256 where it was submitted; the agent refuses a file that "
        "no longer matches when it reads it.",
    )
    size: int | None = Field(default=None, ge=0, description="The file's size when submitted.")


class VersionJobIn(Request):
    """Verify or scan a version on the cluster that holds it."""


class PseudonymizeIn(Request):
    pseudonymize: list[Column] = Field(default_factory=list, max_length=500)
    generalize: dict[Column, Literal["age-band", "zip3"]] = Field(
        default_factory=dict, max_length=500
    )
    drop: list[Column] = Field(default_factory=list, max_length=500)
    redact: dict[Column, Literal["placeholder", "pseudonym"]] = Field(
        default_factory=dict, max_length=500
    )


class SchemaIn(Request):
    """A data steward's edit of a version's schema (validated against the schema models)."""

    schema_: JsonObject = Field(alias="schema")
