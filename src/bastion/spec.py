"""The run spec: the YAML document a user submits, validated before anything is queued.

A run names its project and cluster and what to do. This version knows the built-in
``smoke`` job (for testing the machinery end to end); the training and evaluation
stages of DESIGN §2 join the union as they land. Unknown fields are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from bastion.errors import InvalidSpec

__all__ = ["NAME_PATTERN", "Resources", "RunSpec", "SmokeJob", "load_spec", "parse_spec"]

#: Lower-case names of projects, clusters, users, datasets, models, policies.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SmokeJob(_Strict):
    """A synthetic job: ``steps`` steps with a metric and a checkpoint each, optional failure."""

    type: Literal["smoke"]
    steps: int = Field(default=3, ge=1, le=100_000)
    sleep_seconds: float = Field(default=0.0, ge=0, le=3600)
    fail_at_step: int | None = Field(default=None, ge=1)
    checkpoint_every: int = Field(default=1, ge=1)
    allocate_mb: int = Field(
        default=0, ge=0, le=1 << 20, description="Memory to hold (tests limits)."
    )
    inputs: dict[
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")],
        Annotated[str, StringConstraints(min_length=1, max_length=1000)],
    ] = Field(
        default_factory=dict,
        max_length=100,
        description="Input files, by name, as paths under the agent's storage root inputs/.",
    )


class Resources(_Strict):
    """Limits applied to the job's process."""

    timeout_seconds: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    memory_mb: int = Field(default=4096, ge=64, le=1 << 20)
    cpu_seconds: int | None = Field(default=None, ge=1)


class RunSpec(_Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    project: Name
    cluster: Name
    job: SmokeJob
    max_retries: int = Field(default=0, ge=0, le=10)
    resources: Resources = Field(default_factory=Resources)


def _where(error: Mapping[str, Any]) -> str:
    return ".".join(str(part) for part in error.get("loc", ())) or "spec"


def parse_spec(data: Any, *, source: str = "spec") -> RunSpec:
    """Validate a spec document; :class:`InvalidSpec` names every bad field and why."""
    if not isinstance(data, dict):
        raise InvalidSpec(f"{source}: a run spec is a mapping of fields, got {type(data).__name__}")
    try:
        return RunSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(e)}: {e['msg']}" for e in exc.errors()[:10])
        raise InvalidSpec(f"{source}: {problems}") from None


def load_spec(path: Path) -> RunSpec:
    """Read and validate a YAML spec file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidSpec(f"{path}: no such file") from None
    if len(text) > 1 << 20:
        raise InvalidSpec(f"{path}: larger than 1 MiB")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"{path}: not valid YAML ({exc})") from None
    return parse_spec(data, source=str(path))
