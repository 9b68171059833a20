"""How a sealed dataset version names its one data file (no pandas here: the agent reads it)."""

from __future__ import annotations

__all__ = ["DATA_FILES"]

#: The canonical file of a version, by kind: tables as Parquet, images as NPZ.
DATA_FILES = {"table": "data.parquet", "images": "data.npz"}
