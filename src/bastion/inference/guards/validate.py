"""Strict request validation from the dataset schema the model was trained on.

A table request is ``{"instances": [{feature: value, ...}, ...]}`` with exactly the
model's feature columns; an image request is ``{"instances": [[[pixel, ...], ...], ...]}``
with the schema's shape; a text model's is ``{"text": "..."}`` or ``{"instances": ["...",
...]}``, each text at most ``max_text_chars`` long; a language model's is ``{"text": prompt,
"max_new_tokens": n}``. Types, ranges, categories, NaN/inf and
the batch size are checked; every violation names the field and the rule, never the
offending value, nor an exact bound of the training data (the schema here is the exact
one: its bounds are values of training rows, which the published schema only rounds).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bastion.data.schema import ColumnSchema, ColumnType, ImageSchema, TableSchema
from bastion.errors import InvalidInput
from bastion.train.data import Preprocessing

__all__ = ["FieldError", "RequestInvalid", "RequestValidator"]

#: At most this many violations are listed in one response.
_MAX_LISTED = 20
#: Range rules, without the bound: it is the value of one training row.
_ABOVE = "above the maximum of the training data"
_BELOW = "below the minimum of the training data"


@dataclass(frozen=True)
class FieldError:
    field: str
    rule: str


class RequestInvalid(InvalidInput):
    """The body breaks the deployment's input contract; ``errors`` names each field and rule."""

    def __init__(self, errors: list[FieldError]) -> None:
        listed = "; ".join(f"{e.field}: {e.rule}" for e in errors[:3])
        super().__init__(f"invalid request: {listed}")
        self.errors = errors[:_MAX_LISTED]


def _label(key: str) -> str:
    """A field name from the request, safe to echo: short, and quoted unless plain."""
    text = key[:64]
    return text if text.isidentifier() else json.dumps(text)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class RequestValidator:
    """Turns a parsed JSON body into model inputs, or raises :class:`RequestInvalid`."""

    def __init__(
        self,
        *,
        schema: TableSchema | ImageSchema,
        prep: Preprocessing,
        max_batch: int,
        max_text_chars: int = 20_000,
        max_new_tokens: int = 64,
    ) -> None:
        self.schema = schema
        self.prep = prep
        self.max_batch = max_batch
        self.max_text_chars = max_text_chars
        self.max_new_tokens = max_new_tokens
        self._columns: dict[str, ColumnSchema] = {}
        if prep.kind == "text":
            return
        if isinstance(schema, TableSchema):
            for name in [*prep.numeric, *prep.categorical]:
                column = schema.column(name)
                if column is None:
                    raise InvalidInput(f"feature {name!r} is not in the dataset schema")
                self._columns[name] = column

    def instances(self, body: Any) -> list[Any]:
        if not isinstance(body, dict):
            raise RequestInvalid([FieldError("body", "must be a JSON object")])
        if self.prep.kind == "text" and "text" in body:  # one text, the short way
            if len(body) > 1:
                raise RequestInvalid([FieldError("body", "either text or instances, not both")])
            return [body["text"]]
        unknown = sorted(set(body) - {"instances"})
        if unknown:
            raise RequestInvalid([FieldError(_label(unknown[0]), "unknown field")])
        instances = body.get("instances")
        if not isinstance(instances, list):
            raise RequestInvalid([FieldError("instances", "required, a list")])
        if not instances:
            raise RequestInvalid([FieldError("instances", "must not be empty")])
        if len(instances) > self.max_batch:
            raise RequestInvalid([FieldError("instances", f"at most {self.max_batch} per request")])
        return instances

    def generation(self, body: Any) -> tuple[str, int]:
        """A language model's request, ``{"text": prompt, "max_new_tokens": n}``: the prompt
        and how many tokens to write (at most the deployment's ``max_new_tokens``)."""
        if not isinstance(body, dict):
            raise RequestInvalid([FieldError("body", "must be a JSON object")])
        unknown = sorted(set(body) - {"text", "max_new_tokens"})
        if unknown:
            raise RequestInvalid([FieldError(_label(unknown[0]), "unknown field")])
        prompt = body.get("text")
        errors = []
        if not isinstance(prompt, str):
            errors.append(FieldError("text", "required, a string"))
        elif len(prompt) > self.max_text_chars:
            errors.append(FieldError("text", f"longer than {self.max_text_chars} characters"))
        wanted = body.get("max_new_tokens", self.max_new_tokens)
        if not isinstance(wanted, int) or isinstance(wanted, bool) or wanted < 1:
            errors.append(FieldError("max_new_tokens", "must be a positive integer"))
        elif wanted > self.max_new_tokens:
            errors.append(FieldError("max_new_tokens", f"at most {self.max_new_tokens}"))
        if errors:
            raise RequestInvalid(errors)
        return str(prompt), int(wanted)

    def __call__(self, body: Any) -> torch.Tensor:
        return self.features(self.instances(body))

    def features(self, instances: list[Any]) -> torch.Tensor:
        """Model inputs for the instances :meth:`instances` accepted, checked row by row."""
        if isinstance(self.schema, ImageSchema):
            return self._images(instances, self.schema)
        if self.prep.kind == "text":
            return self._texts(instances)
        return self._table(instances)

    def _texts(self, instances: list[Any]) -> torch.Tensor:
        errors: list[FieldError] = []
        for i, text in enumerate(instances):
            if not isinstance(text, str):
                errors.append(FieldError(f"instances[{i}]", "must be a string (a text)"))
            elif len(text) > self.max_text_chars:
                errors.append(
                    FieldError(f"instances[{i}]", f"longer than {self.max_text_chars} characters")
                )
            if len(errors) >= _MAX_LISTED:
                break
        if errors:
            raise RequestInvalid(errors)
        return self.prep.text_features(instances)

    # -- tables ----------------------------------------------------------------------------

    def _table(self, instances: list[Any]) -> torch.Tensor:
        errors: list[FieldError] = []
        for i, row in enumerate(instances):
            if not isinstance(row, dict):
                errors.append(FieldError(f"instances[{i}]", "must be an object"))
                continue
            for name in row.keys() - self._columns.keys():
                errors.append(
                    FieldError(f"instances[{i}].{_label(name)}", "not a feature of this model")
                )
            for name, column in self._columns.items():
                if name not in row:
                    errors.append(FieldError(f"instances[{i}].{name}", "required"))
                    continue
                rule = _check_value(row[name], column, categorical=name in self.prep.categorical)
                if rule is not None:
                    errors.append(FieldError(f"instances[{i}].{name}", rule))
            if len(errors) >= _MAX_LISTED:
                break
        if errors:
            raise RequestInvalid(errors)
        return self.prep.row_features(instances)

    # -- images ----------------------------------------------------------------------------

    def _images(self, instances: list[Any], schema: ImageSchema) -> torch.Tensor:
        try:
            array = np.asarray(instances, dtype=np.float64)
        except (ValueError, TypeError):
            raise RequestInvalid(
                [
                    FieldError(
                        "instances", f"each instance must be a {schema.shape} array of numbers"
                    )
                ]
            ) from None
        if list(array.shape[1:]) != schema.shape:
            raise RequestInvalid(
                [FieldError("instances", f"shape {list(array.shape[1:])} is not {schema.shape}")]
            )
        errors: list[FieldError] = []
        flat = array.reshape(len(array), -1)
        for i in np.flatnonzero(~np.isfinite(flat).all(axis=1))[:_MAX_LISTED]:
            errors.append(FieldError(f"instances[{i}]", "NaN or infinite pixels"))
        outside = (flat < schema.minimum) | (flat > schema.maximum)
        for i in np.flatnonzero(outside.any(axis=1))[:_MAX_LISTED]:
            errors.append(
                FieldError(f"instances[{i}]", "pixels outside the range of the training data")
            )
        if schema.dtype.startswith(("int", "uint")):
            fractional = np.flatnonzero(
                (flat != np.round(flat)).any(axis=1) & np.isfinite(flat).all(axis=1)
            )
            for i in fractional[:_MAX_LISTED]:
                errors.append(
                    FieldError(f"instances[{i}]", f"pixels must be integers ({schema.dtype})")
                )
        if errors:
            raise RequestInvalid(errors)
        return self.prep.image_features(array)


def _check_value(  # noqa: PLR0911 - one return per rule
    value: Any, column: ColumnSchema, *, categorical: bool
) -> str | None:
    """The rule ``value`` breaks, or None."""
    if value is None:
        return "must not be null"
    if categorical:
        if not isinstance(value, str | int) or isinstance(value, bool):
            return "must be a string"
        if column.categories is not None and str(value) not in column.categories:
            return f"not one of the {len(column.categories)} categories"
        return None
    if column.type is ColumnType.BOOLEAN:
        return None if isinstance(value, bool) else "must be true or false"
    if not _is_number(value):
        return f"must be a number ({column.type.value})"
    try:
        if not math.isfinite(value):
            return "must be finite"
    except OverflowError:  # an integer beyond any float
        return _ABOVE
    if column.type is ColumnType.INTEGER and float(value) != int(value):
        return "must be an integer"
    if column.minimum is not None and value < column.minimum:
        return _BELOW
    if column.maximum is not None and value > column.maximum:
        return _ABOVE
    return None
