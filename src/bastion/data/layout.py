"""How a sealed dataset version names its files (no pandas here: the agent reads it)."""

from __future__ import annotations

__all__ = ["DATA_FILES", "SCHEMA_FILE"]

#: The canonical file of a version, by kind: tables as Parquet, images as NPZ.
DATA_FILES = {"table": "data.parquet", "images": "data.npz"}
#: The exact and the published schema, sealed beside the data (``publish.KeptSchema``).
SCHEMA_FILE = "schema.json"
