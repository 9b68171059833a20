"""Schemas: inferred from the reference data, and every kind of bad input named."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bastion.data.checks import (
    infer_image_schema,
    infer_table_schema,
    validate_images,
    validate_table,
)
from bastion.data.reference import digits, patients
from bastion.data.schema import ColumnType, TableSchema


def test_inferred_patient_schema_matches_the_data() -> None:
    frame = patients(seed=0)
    schema = infer_table_schema(frame)
    assert validate_table(frame, schema) == []
    by_name = {c.name: c for c in schema.columns}
    assert by_name["mean_radius"].type is ColumnType.FLOAT
    assert by_name["diagnosis"].type is ColumnType.INTEGER
    assert (by_name["diagnosis"].minimum, by_name["diagnosis"].maximum) == (0.0, 1.0)
    assert by_name["sex"].type is ColumnType.CATEGORY and by_name["sex"].categories == ["F", "M"]
    assert by_name["email"].type is ColumnType.STRING
    # The schema round-trips through JSON (stored with the version, edited by a steward).
    assert TableSchema.model_validate_json(schema.model_dump_json()) == schema


def test_violations_name_the_column_and_the_rule_but_not_the_values() -> None:
    frame = patients(seed=0).head(50).copy()
    schema = infer_table_schema(frame)
    bad = frame.copy()
    bad.loc[0, "mean_radius"] = 1e9
    bad.loc[1, "mean_radius"] = np.inf
    bad.loc[2, "sex"] = "X"
    bad.loc[3, "diagnosis"] = np.nan
    bad["unexpected"] = 1
    bad = bad.drop(columns=["email"])
    found = {(v.column, v.rule) for v in validate_table(bad, schema)}
    assert ("mean_radius", f"above maximum {schema.column('mean_radius').maximum}") in found  # type: ignore[union-attr]
    assert ("mean_radius", "NaN or infinite values") in found
    assert ("sex", "unknown category") in found
    assert ("diagnosis", "null values not allowed") in found
    assert ("unexpected", "column not in the schema") in found
    assert ("email", "missing column") in found
    text = " ".join(str(v) for v in validate_table(bad, schema))
    assert "1000000000" not in text and "X" not in text.replace("max", "")


def test_wrong_types_are_refused() -> None:
    schema = infer_table_schema(pd.DataFrame({"age": [30, 40, 50]}))
    found = validate_table(pd.DataFrame({"age": ["thirty", 40.5, 45]}), schema)
    rules = {v.rule for v in found}
    assert "not integer" in rules and "not an integer" in rules


def test_image_schema_and_validation() -> None:
    images, labels = digits()
    schema = infer_image_schema(images, labels)
    assert schema.shape == [8, 8] and (schema.minimum, schema.maximum) == (0.0, 16.0)
    assert validate_images(images, schema, labels) == []
    wrong_shape = validate_images(np.zeros((2, 28, 28)), schema)
    assert wrong_shape[0].rule.startswith("shape [28, 28]")
    hot = images[:10].astype(float)
    hot[0, 0, 0] = 255
    hot[1, 0, 0] = np.nan
    rules = {v.rule for v in validate_images(hot, schema, np.array([0] * 9 + [42]))}
    assert "pixels outside [0.0, 16.0]" in rules and "NaN or infinite pixels" in rules
    assert "unknown class" in rules
