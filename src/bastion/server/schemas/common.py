"""Shared pieces of the API schemas."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from bastion.http_status import PROBLEM_JSON
from bastion.spec import NAME_PATTERN

__all__ = ["Name", "NamePath", "Page", "Request", "Response", "Text"]

#: Lower-case names for users, projects, clusters, datasets, models, policies.
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, min_length=1, max_length=64)]
#: A dataset, model or policy name in a route's path: malformed ones are 422 before any lookup.
NamePath = Annotated[str, Path(pattern=NAME_PATTERN, min_length=1, max_length=64)]
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


#: Documented on every API route so clients (and schemathesis) know the error shapes.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {
        "model": Problem,
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    for status, description in (
        (401, "No valid token."),
        (403, "The token's roles or scopes do not allow this."),
        (404, "The named thing does not exist."),
        (409, "Conflicts with the current state."),
        (413, "Request body too large."),
        (422, "Invalid input; names the field."),
        (429, "Too many attempts; see Retry-After."),
        (503, "The database is unavailable; nothing was changed."),
    )
}

#: The same errors for a route whose success is not JSON (an HTML page): errors stay JSON.
JSON_ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {
        **response,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    for status, response in ERROR_RESPONSES.items()
}
