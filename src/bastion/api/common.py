"""Shared pieces of the API models: names, request/response bases, problem details."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from bastion.patterns import NAME_PATTERN

__all__ = [
    "FieldError",
    "JsonObject",
    "Name",
    "Page",
    "Pem",
    "Problem",
    "Request",
    "Response",
    "RunId",
    "RunStatus",
    "Stage",
    "Text",
]

#: Lower-case names for users, projects, clusters, datasets, models, policies.
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, min_length=1, max_length=64)]
Text = Annotated[str, StringConstraints(max_length=2000)]


class Request(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Response(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(Request):
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class FieldError(Response):
    field: str
    message: str


class Problem(BaseModel):
    """Every error response, as RFC 9457 problem details: ``type`` names the kind of error
    (``urn:bastion:error:...``, one per Bastion error class; ``about:blank`` for a route
    that does not exist), ``detail`` says what was wrong, and, for validation, ``errors``
    names each field. Error classes add members of their own (``retry_after``, ``reasons``,
    ``kind``, ``seq``)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


#: A PEM-encoded public key.
Pem = Annotated[str, StringConstraints(max_length=8000)]
Stage = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
RunStatus = Literal["queued", "leased", "running", "succeeded", "failed", "cancelled"]
JsonObject = Annotated[dict[str, Any], Field(max_length=200)]
RunId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
