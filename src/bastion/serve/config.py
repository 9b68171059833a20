"""A deployment's serving settings (validated; unknown fields refused)."""

from __future__ import annotations

import enum

from pydantic import BaseModel, ConfigDict, Field

from bastion.serve.guards.ood import OodAction
from bastion.serve.output import OutputMode

__all__ = ["ExtractionAction", "ServeConfig"]


class ExtractionAction(enum.StrEnum):
    ALERT = "alert"
    THROTTLE = "throttle"
    BLOCK = "block"


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    output: OutputMode = OutputMode.ROUNDED
    top_k: int = Field(default=3, ge=1, le=100)
    digits: int = Field(default=2, ge=0, le=6)
    ood_action: OodAction = OodAction.FLAG
    extraction_action: ExtractionAction = ExtractionAction.THROTTLE
    #: A throttled key pays this many tokens per instance.
    throttle_factor: int = Field(default=10, ge=2)
    max_batch: int = Field(default=256, ge=1, le=10_000)
    max_body_bytes: int = Field(default=1_000_000, ge=1024, le=64_000_000)
    #: Share of clean held-out inputs the detector may flag (its thresholds' budget).
    ood_fpr: float = Field(default=0.02, gt=0, lt=0.5)
