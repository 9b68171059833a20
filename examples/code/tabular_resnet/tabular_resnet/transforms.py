"""Data transforms: called on the dataset's table before features are chosen."""

from __future__ import annotations

import pandas as pd


def add_ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the ratio of each ``worst_X`` measurement to its ``mean_X``, where both exist."""
    out = frame.copy()
    for column in frame.columns:
        if column.startswith("mean_"):
            measured = column.removeprefix("mean_")
            if f"worst_{measured}" in frame.columns:
                out[f"ratio_{measured}"] = frame[f"worst_{measured}"] / (frame[column] + 1e-9)
    return out
