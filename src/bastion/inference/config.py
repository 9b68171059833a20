"""A deployment's serving settings (validated; unknown fields refused)."""

from __future__ import annotations

import enum

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ExtractionAction", "OodAction", "OutputMode", "ServeConfig"]


class OutputMode(enum.StrEnum):
    """How much of the model's belief a caller sees (see ``bastion.inference.output``)."""

    PROBABILITIES = "probabilities"
    ROUNDED = "rounded"
    TOP_K = "top_k"
    LABEL = "label"


class OodAction(enum.StrEnum):
    """What happens to an input the detectors flag."""

    FLAG = "flag"
    REJECT = "reject"


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
    #: Text models: the longest text a request may send, in characters (the model reads
    #: its first ``model.max_length`` tokens of it).
    max_text_chars: int = Field(default=20_000, ge=1, le=1_000_000)
    #: Language models: the most tokens one request may have generated.
    max_new_tokens: int = Field(default=64, ge=1, le=1024)
