"""Dashboard forms: bounded text fields, validated by the API's own request models."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Form
from pydantic import BaseModel, ValidationError

from bastion.errors import InvalidInput

__all__ = ["FormText", "parse_form"]

M = TypeVar("M", bound=BaseModel)

#: A text field of a dashboard form (the request body limit applies as well).
FormText = Annotated[str, Form(max_length=2000)]


def parse_form(model: type[M], values: dict[str, Any]) -> M:
    """``values`` as ``model`` (the API's request model), or InvalidInput naming the field."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(part) for part in problem["loc"]) or "form"
        raise InvalidInput(f"{field}: {problem['msg']}") from None
