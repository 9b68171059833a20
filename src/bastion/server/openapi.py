"""The control plane's OpenAPI document: every error documented as RFC 9457 problem details."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from bastion.api.common import Problem
from bastion.http_status import PROBLEM_JSON

__all__ = ["ERROR_RESPONSES", "problem_openapi"]

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


def problem_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` with each error response documented as problem details only (FastAPI
    also lists the route's own media type, JSON or HTML, for a response given a model)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    for response in operation.get("responses", {}).values():
                        content = response.get("content", {})
                        if PROBLEM_JSON in content:
                            response["content"] = {PROBLEM_JSON: content[PROBLEM_JSON]}
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi
