"""The published schema names no value of a row; a steward's edit of it reaches the exact one."""

from __future__ import annotations

import pandas as pd
import pytest

from bastion.data.checks import category_rows, infer_image_schema, infer_table_schema
from bastion.data.publish import (
    MIN_CATEGORY_ROWS,
    effective_schema,
    publish_schema,
    round_outward,
    unpublished_columns,
)
from bastion.data.reference import digits
from bastion.data.schema import ColumnSchema, ColumnType, TableSchema

EXACT = TableSchema(
    columns=[
        ColumnSchema(
            name="card_number",
            type=ColumnType.INTEGER,
            nullable=False,
            minimum=60470318753.0,
            maximum=4.98e18,
        ),
        ColumnSchema(
            name="radius", type=ColumnType.FLOAT, nullable=False, minimum=6.981, maximum=28.11
        ),
        ColumnSchema(
            name="ward",
            type=ColumnType.CATEGORY,
            nullable=False,
            categories=["cardiology", "oncology", "rare-ward"],
        ),
        ColumnSchema(name="email", type=ColumnType.STRING, nullable=True, max_length=31),
        ColumnSchema(name="comment", type=ColumnType.STRING, nullable=False, max_length=37),
    ]
)
ROWS = {"ward": {"cardiology": 40, "oncology": MIN_CATEGORY_ROWS, "rare-ward": 1}}


def _published() -> TableSchema:
    published = publish_schema(EXACT, identifiers=["card_number", "email"], category_rows=ROWS)
    assert isinstance(published, TableSchema)
    return published


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (6.981, 28.11, (0.0, 30.0)),  # spread 21: a grid of 10
        (1931, 2004, (1930.0, 2010.0)),  # an offset column keeps its offset
        (143.5, 2501.0, (0.0, 3000.0)),
        (0.05263, 0.1634, (0.0, 0.2)),  # exact decimals, not 0.20000000000000004
        (-3.2, 5.1, (-4.0, 6.0)),
        (0.0, 16.0, (-10.0, 20.0)),  # a bound on the grid moves a step out
        (0.0, 1.0, (-1.0, 2.0)),
        (0.0, 7.0, (-1.0, 8.0)),  # small integers: never the exact extremes
        (1931, 2000, (1930.0, 2010.0)),
        (5.0, 5.0, (5.0, 5.0)),  # a constant is every row's value, not one row's
        (0.0, 918273.0, (-100000.0, 1000000.0)),
        (None, None, (None, None)),
        (float("-inf"), 2.5, (None, 3.0)),
    ],
)
def test_bounds_are_rounded_outward_to_the_grid_below_the_spread(
    low: float | None, high: float | None, expected: tuple[float | None, float | None]
) -> None:
    assert round_outward(low, high) == expected


def test_identifiers_are_redacted_bounds_rounded_and_rare_categories_withheld() -> None:
    published = _published()
    assert published.model_dump(mode="json") == {
        "kind": "table",
        "published": True,
        "columns": [
            {
                "name": "card_number",
                "type": "integer",
                "nullable": False,
                "minimum": None,
                "maximum": None,
                "categories": None,
                "max_length": None,
                "redacted": True,
                "categories_withheld": 0,
            },
            {
                "name": "radius",
                "type": "float",
                "nullable": False,
                "minimum": 0.0,
                "maximum": 30.0,
                "categories": None,
                "max_length": None,
                "redacted": False,
                "categories_withheld": 0,
            },
            {
                "name": "ward",
                "type": "category",
                "nullable": False,
                "minimum": None,
                "maximum": None,
                "categories": ["cardiology", "oncology"],
                "max_length": None,
                "redacted": False,
                "categories_withheld": 1,
            },
            {
                "name": "email",
                "type": "string",
                "nullable": True,
                "minimum": None,
                "maximum": None,
                "categories": None,
                "max_length": None,
                "redacted": True,
                "categories_withheld": 0,
            },
            {
                "name": "comment",
                "type": "string",
                "nullable": False,
                "minimum": None,
                "maximum": None,
                "categories": None,
                "max_length": 40,
                "redacted": False,
                "categories_withheld": 0,
            },
        ],
    }
    # Categories nobody counted are withheld too (fail closed).
    uncounted = publish_schema(EXACT, identifiers=[], category_rows={})
    assert isinstance(uncounted, TableSchema)
    ward = uncounted.column("ward")
    assert ward is not None and ward.categories == [] and ward.categories_withheld == 3


def test_counts_come_from_the_data() -> None:
    frame = pd.DataFrame({"ward": ["a"] * 6 + ["b"] * 4 + [None], "x": range(11)})
    schema = infer_table_schema(frame)
    assert category_rows(frame, schema) == {"ward": {"a": 6, "b": 4}}
    published = publish_schema(schema, identifiers=[], category_rows=category_rows(frame, schema))
    assert isinstance(published, TableSchema)
    assert published.column("ward") == ColumnSchema(
        name="ward",
        type=ColumnType.CATEGORY,
        nullable=True,
        categories=["a"],
        categories_withheld=1,
    )


def test_image_schemas_round_their_value_range() -> None:
    images, labels = digits()
    exact = infer_image_schema(images, labels)
    published = publish_schema(exact, identifiers=[], category_rows={})
    assert published.model_dump(mode="json") == {
        "kind": "images",
        "shape": [8, 8],
        "dtype": "uint8",
        "minimum": -10.0,  # 0 lies on the grid of 10 (the spread is 16): one step out
        "maximum": 20.0,
        "classes": list(range(10)),
        "published": True,
    }
    assert effective_schema(exact=exact, published=published, current=published) == exact
    edited = published.model_copy(update={"maximum": 15.0})
    assert effective_schema(exact=exact, published=published, current=edited) == (
        exact.model_copy(update={"maximum": 15.0})
    )


def test_only_a_published_schema_with_redacted_identifiers_may_leave() -> None:
    assert unpublished_columns(EXACT, identifiers=["card_number"]) == [
        "the schema is not the published one"
    ]
    published = _published()
    assert unpublished_columns(published, identifiers=["card_number", "email"]) == []
    leaky = published.model_copy(deep=True)
    card = leaky.column("card_number")
    assert card is not None
    card.maximum = 4.98e18
    assert unpublished_columns(leaky, identifiers=["card_number", "email"]) == ["card_number"]
    # A column the scan flags but the schema leaves unmarked is caught too.
    assert unpublished_columns(published, identifiers=["radius"]) == ["radius"]


def test_an_unedited_schema_is_enforced_exactly() -> None:
    published = _published()
    assert effective_schema(exact=EXACT, published=published, current=published) == EXACT


def test_a_stewards_edit_applies_to_the_exact_schema() -> None:
    published = _published()
    edited = published.model_copy(deep=True)
    radius, ward, card = (edited.column(n) for n in ("radius", "ward", "card_number"))
    assert radius is not None and ward is not None and card is not None
    radius.maximum = 20.0  # tighter than the data
    ward.categories = ["cardiology", "surgery"]  # oncology removed, surgery added
    card.nullable = True
    edited.columns = [c for c in edited.columns if c.name != "comment"]
    edited.columns.append(ColumnSchema(name="added", type=ColumnType.BOOLEAN, nullable=False))
    effective = effective_schema(exact=EXACT, published=published, current=edited)
    assert effective == TableSchema(
        columns=[
            # Untouched fields keep their exact values, even of a redacted column.
            ColumnSchema(
                name="card_number",
                type=ColumnType.INTEGER,
                nullable=True,
                minimum=60470318753.0,
                maximum=4.98e18,
            ),
            ColumnSchema(
                name="radius", type=ColumnType.FLOAT, nullable=False, minimum=6.981, maximum=20.0
            ),
            # The withheld rare category stays allowed.
            ColumnSchema(
                name="ward",
                type=ColumnType.CATEGORY,
                nullable=False,
                categories=["cardiology", "rare-ward", "surgery"],
            ),
            ColumnSchema(name="email", type=ColumnType.STRING, nullable=True, max_length=31),
            ColumnSchema(name="added", type=ColumnType.BOOLEAN, nullable=False),
        ]
    )
    # Lifting a constraint lifts it.
    lifted = published.model_copy(deep=True)
    lifted_ward = lifted.column("ward")
    assert lifted_ward is not None
    lifted_ward.categories = None
    merged = effective_schema(exact=EXACT, published=published, current=lifted)
    assert isinstance(merged, TableSchema)
    merged_ward = merged.column("ward")
    assert merged_ward is not None and merged_ward.categories is None
