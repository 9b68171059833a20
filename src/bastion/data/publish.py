"""What of a dataset's schema may leave the compute plane, and how a steward's edit comes back.

The compute plane keeps a version's exact schema: it seals it with the data and copies it
into every model trained on it, where training and serving validation enforce it. The
control plane gets the *published* schema, which names no value of a row:

* an identifier column (flagged by the PII scan, or the subject-id column) keeps its name,
  type and nullability and is marked ``redacted``: no bound, category or length;
* numeric bounds (and an image's value range) are rounded strictly outward to a multiple
  of the power of ten just below the column's spread (maximum minus minimum; a bound
  already on that grid moves one step out; a constant column keeps its value, which is
  every row's), so each published bound places the extreme row only within an interval
  wider than a tenth of the spread. ``[6.981, 28.11]`` becomes
  ``[0, 30]``, ``[1931, 2004]`` becomes ``[1930, 2010]``. This hides the row's value, not
  the order of magnitude of an outlier; it is not differential privacy;
* a string's maximum length is rounded up the same way (``37`` becomes ``40``);
* a category held by fewer than :data:`MIN_CATEGORY_ROWS` rows is left out of the list (a
  category of one patient is that patient); ``categories_withheld`` counts them.

A data steward edits the published schema. :func:`effective_schema` applies that edit, as
a change against the published schema, to the exact one the compute plane kept.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from pydantic import BaseModel, ConfigDict, Field

from bastion.data.schema import ColumnSchema, ImageSchema, TableSchema
from bastion.errors import InvalidInput

__all__ = [
    "MIN_CATEGORY_ROWS",
    "KeptSchema",
    "effective_schema",
    "publish_schema",
    "round_outward",
    "unpublished_columns",
]

#: A category held by fewer rows than this is withheld from the published schema.
MIN_CATEGORY_ROWS = 5


class KeptSchema(BaseModel):
    """What the compute plane seals beside a version's data (``schema.json``): the exact
    schema, and the published one the control plane was sent (a steward edits that one)."""

    model_config = ConfigDict(extra="forbid")

    exact: TableSchema | ImageSchema = Field(discriminator="kind")
    published: TableSchema | ImageSchema = Field(discriminator="kind")


def _grid(value: Decimal, step: Decimal, rounding: str) -> float:
    """``value`` moved to the grid, strictly outward: a value already on it moves a step
    (else a column of small integers, 0 to 7, would publish its exact extremes)."""
    on_grid = (value / step).to_integral_value(rounding=rounding) * step
    if on_grid == value:
        on_grid += step if rounding == ROUND_CEILING else -step
    return float(on_grid)


def round_outward(low: float | None, high: float | None) -> tuple[float | None, float | None]:
    """``[low, high]`` widened to the grid of the power of ten just below ``high - low``.

    A missing or infinite bound stays open (None).
    """
    given = [
        Decimal(repr(float(v))) if v is not None and math.isfinite(v) else None for v in (low, high)
    ]
    present = [v for v in given if v is not None]
    if not present:
        return None, None
    lower, upper = given
    if lower is not None and lower == upper:  # a constant is every row's value, not one row's
        return float(lower), float(lower)
    spread = max(present) - min(present)
    scale = spread if spread else max(abs(v) for v in present)
    step = Decimal(1).scaleb(scale.adjusted()) if scale else Decimal(1)
    return (
        None if lower is None else _grid(lower, step, ROUND_FLOOR),
        None if upper is None else _grid(upper, step, ROUND_CEILING),
    )


def _publish_column(
    column: ColumnSchema, *, identifier: bool, rows: Mapping[str, int]
) -> ColumnSchema:
    if identifier:
        return ColumnSchema(
            name=column.name, type=column.type, nullable=column.nullable, redacted=True
        )
    low, high = round_outward(column.minimum, column.maximum)
    categories = None
    if column.categories is not None:
        categories = [c for c in column.categories if rows.get(c, 0) >= MIN_CATEGORY_ROWS]
    length = None
    if column.max_length is not None:
        rounded = round_outward(0.0, float(column.max_length))[1]
        length = None if rounded is None else int(rounded)
    return ColumnSchema(
        name=column.name,
        type=column.type,
        nullable=column.nullable,
        minimum=low,
        maximum=high,
        categories=categories,
        max_length=length,
        categories_withheld=len(column.categories or []) - len(categories or []),
    )


def publish_schema(
    schema: TableSchema | ImageSchema,
    *,
    identifiers: Collection[str],
    category_rows: Mapping[str, Mapping[str, int]],
) -> TableSchema | ImageSchema:
    """The schema the control plane may hold (see the module docstring for the rules).

    ``category_rows`` counts the rows of each category per column; a category it does not
    count is withheld.
    """
    if isinstance(schema, ImageSchema):
        low, high = round_outward(schema.minimum, schema.maximum)
        return schema.model_copy(
            update={
                "minimum": schema.minimum if low is None else low,
                "maximum": schema.maximum if high is None else high,
                "published": True,
            }
        )
    columns = [
        _publish_column(c, identifier=c.name in identifiers, rows=category_rows.get(c.name, {}))
        for c in schema.columns
    ]
    return TableSchema(columns=columns, published=True)


def unpublished_columns(
    schema: TableSchema | ImageSchema, *, identifiers: Collection[str]
) -> list[str]:
    """What makes ``schema`` unfit to leave the compute plane: not marked published, or an
    identifier column with a bound, category or length. Empty when it may leave."""
    if not schema.published:
        return ["the schema is not the published one"]
    if isinstance(schema, ImageSchema):
        return []
    return [
        c.name
        for c in schema.columns
        if c.name in identifiers
        and not (
            c.redacted
            and c.minimum is None
            and c.maximum is None
            and c.categories is None
            and c.max_length is None
        )
    ]


def _merged_categories(
    exact: list[str] | None, published: list[str] | None, current: list[str] | None
) -> list[str] | None:
    if current == published:
        return exact
    if current is None or published is None or exact is None:
        return current  # the steward set or lifted the constraint as a whole
    removed, added = set(published) - set(current), set(current) - set(published)
    return sorted((set(exact) - removed) | added)


def _merged_column(
    exact: ColumnSchema, published: ColumnSchema, current: ColumnSchema
) -> ColumnSchema:
    def pick(field: str) -> object:
        mine = getattr(current, field)
        return mine if mine != getattr(published, field) else getattr(exact, field)

    return ColumnSchema.model_validate(
        {
            "name": current.name,
            **{f: pick(f) for f in ("type", "nullable", "minimum", "maximum", "max_length")},
            "categories": _merged_categories(
                exact.categories, published.categories, current.categories
            ),
        }
    )


def effective_schema(
    *,
    exact: TableSchema | ImageSchema,
    published: TableSchema | ImageSchema,
    current: TableSchema | ImageSchema,
) -> TableSchema | ImageSchema:
    """The schema the compute plane enforces: ``exact``, with the steward's edit applied.

    ``current`` is the control plane's schema of the version (``published``, or a steward's
    correction of it). Each field the steward changed takes their value; each field they
    left keeps its exact value; categories they added or removed are added to or removed
    from the exact list (the withheld ones stay); columns they added or removed are added
    or removed.
    """
    if current == published:
        return exact
    if isinstance(exact, ImageSchema):
        if not isinstance(published, ImageSchema) or not isinstance(current, ImageSchema):
            raise InvalidInput("the version's schema is no longer an image schema")
        fields = ("shape", "dtype", "minimum", "maximum", "classes")
        changed = {
            f: getattr(current, f) for f in fields if getattr(current, f) != getattr(published, f)
        }
        return exact.model_copy(update=changed)
    if not isinstance(published, TableSchema) or not isinstance(current, TableSchema):
        raise InvalidInput("the version's schema is no longer a table schema")
    columns = []
    for column in current.columns:
        before, known = published.column(column.name), exact.column(column.name)
        if before is None or known is None:
            columns.append(column.model_copy(update={"redacted": False, "categories_withheld": 0}))
        else:
            columns.append(_merged_column(known, before, column))
    return TableSchema(columns=columns)
