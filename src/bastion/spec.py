"""The run spec: the YAML document a user submits, validated before anything is queued.

A run names its project and cluster and what to do: the built-in ``smoke`` job (for
testing the machinery end to end) or one of the dataset jobs (``ingest``, ``verify``,
``scan``, ``pseudonymize``), which the control plane queues for ``bastion data``
verbs. The training and evaluation stages of DESIGN §2 join the union as they land.
Unknown fields are refused.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from bastion import safe_yaml
from bastion.errors import InvalidSpec
from bastion.evaluate.config import EvaluateConfig
from bastion.federated.job import FederatedJob, FederatedSiteJob
from bastion.inference.config import ServeConfig
from bastion.patterns import DATASET_REF_PATTERN, NAME_PATTERN
from bastion.train.config import BuiltinModel, EntrypointModel, TrainConfig, text_settings

__all__ = [
    "DATASET_JOB_TYPES",
    "DATASET_REF_PATTERN",
    "NAME_PATTERN",
    "CodeRef",
    "DataHooks",
    "DatasetRef",
    "EraseJob",
    "EvaluateJob",
    "ExportModelJob",
    "FederatedJob",
    "FederatedSiteJob",
    "ImportModelJob",
    "IngestJob",
    "Job",
    "PseudonymizeJob",
    "RegisterCodeJob",
    "Resources",
    "RunSpec",
    "ScanJob",
    "ServeJob",
    "SmokeJob",
    "TrainJob",
    "VerifyJob",
    "VerifyModelJob",
    "load_spec",
    "parse_dataset_ref",
    "parse_spec",
    "site_training",
]

#: Lower-case names of projects, clusters, users, datasets, models, policies.
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
#: ``name@version`` of a registered dataset version.
DatasetRef = Annotated[str, StringConstraints(pattern=DATASET_REF_PATTERN)]
#: ``name@version`` of a registered model version (the same shape).
ModelRef = Annotated[str, StringConstraints(pattern=DATASET_REF_PATTERN)]
#: A registered code package version, ``name@version`` (``bastion code push``).
CodeRef = Annotated[str, StringConstraints(pattern=DATASET_REF_PATTERN)]
ColumnName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(max_length=2000)]


def parse_dataset_ref(ref: str) -> tuple[str, int]:
    """``"patients@3"`` -> ``("patients", 3)``; :class:`InvalidSpec` for anything else."""
    if not re.fullmatch(DATASET_REF_PATTERN, ref):
        raise InvalidSpec(f"{ref!r} is not a dataset version; write NAME@VERSION, e.g. patients@1")
    name, version = ref.split("@")
    return name, int(version)


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


class IngestJob(_Strict):
    """Register a file that lives in the compute plane as a new dataset version."""

    type: Literal["ingest"]
    source: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(
        description="Path of a .csv, .parquet or .npz file on the agent's host."
    )
    dataset: Name
    target: ColumnName | None = None
    subject_id_column: ColumnName | None = None
    purpose: Text = ""
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None,
        description="The file's SHA-256 when it was submitted: the job refuses a file that "
        "has changed since.",
    )
    size: int | None = Field(default=None, ge=0, description="The file's size when submitted.")


class VerifyJob(_Strict):
    """Re-hash a stored version and check its signature."""

    type: Literal["verify"]
    dataset: DatasetRef


class ScanJob(_Strict):
    """Re-run the PII and poisoning scans over a stored version."""

    type: Literal["scan"]
    dataset: DatasetRef


class PseudonymizeJob(_Strict):
    """Make a new version with identifiers replaced by keyed pseudonyms, coarsened or dropped.

    With no column named, the job pseudonymises every identifier and suspected identifier
    column its version's scan recorded, the target excepted, and lists the rest."""

    type: Literal["pseudonymize"]
    dataset: DatasetRef
    pseudonymize: list[ColumnName] = Field(default_factory=list, max_length=500)
    generalize: dict[ColumnName, Literal["age-band", "zip3"]] = Field(
        default_factory=dict, max_length=500
    )
    drop: list[ColumnName] = Field(default_factory=list, max_length=500)
    #: Free-text columns whose identifier spans are replaced (the text around them kept).
    redact: dict[ColumnName, Literal["placeholder", "pseudonym"]] = Field(
        default_factory=dict, max_length=500
    )

    @model_validator(mode="after")
    def _one_treatment(self) -> PseudonymizeJob:
        named = [*self.pseudonymize, *self.generalize, *self.drop]
        twice = sorted(set(self.redact) & set(named))
        if twice:
            raise ValueError(f"{', '.join(twice)}: redacted and treated otherwise; choose one")
        return self


class DataHooks(_Strict):
    """User functions from the run's code package applied to the data as the job reads it."""

    transform: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", max_length=200)
    ] = Field(
        description="'pkg.module:fn': called as fn(frame) on the dataset's table (a pandas "
        "DataFrame) before features are chosen; returns the frame the model trains on."
    )


class RegisterCodeJob(_Strict):
    """Unpack, check and seal a pushed code package (queued by ``bastion code push``)."""

    type: Literal["register-code"]
    name: Name
    version: int = Field(ge=1)


class TrainJob(_Strict):
    """Train a model on a registered dataset version and register it (DESIGN §2)."""

    type: Literal["train"]
    dataset: DatasetRef
    model_name: Name = Field(description="The registered model the trained version joins.")
    target: ColumnName | None = Field(default=None, description="Default: the version's.")
    features: list[ColumnName] | None = Field(
        default=None,
        max_length=10_000,
        description=(
            "Default: every column but the target, the identifier and the suspected "
            "identifier columns."
        ),
    )
    sensitive_features: list[ColumnName] = Field(default_factory=list, max_length=50)
    model: BuiltinModel | EntrypointModel
    code: CodeRef | None = Field(
        default=None,
        description="A registered code package (bastion code push) that model.entrypoint and "
        "data.transform import from; verified and staged read-only into the job.",
    )
    data: DataHooks | None = Field(
        default=None, description="How the job reads the dataset: a transform from the code."
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    init_from: ModelRef | None = Field(
        default=None,
        description="Start from this model version's weights (on the same cluster): fine-tuning.",
    )
    evaluate: EvaluateConfig | None = Field(
        default=None, description="The evaluate stage: attacks and audits of the trained model."
    )
    purpose: Text = Field(
        default="",
        description="Why this run processes the data; must be one of the dataset's declared "
        "purposes when it declares any (GDPR Art. 5(1)(b), purpose limitation).",
    )

    @model_validator(mode="after")
    def _held_out_rows(self) -> TrainJob:
        if self.evaluate is not None and self.train.holdout == 0:
            raise ValueError("the evaluate stage needs held-out rows; set train.holdout above 0")
        return self

    @model_validator(mode="after")
    def _evaluations_fit_the_model(self) -> TrainJob:
        """Text models read token ids: no gradient attack or attribution over them; a language
        model (gpt) has no classes, and its audit is the canary audit, which needs one."""
        builtin = self.model.builtin if isinstance(self.model, BuiltinModel) else None
        kinds = self.evaluate.kinds if self.evaluate is not None else []
        reads_text = text_settings(self.model) is not None
        if reads_text and self.train.adversarial is not None:
            raise ValueError("train.adversarial perturbs numeric inputs; a text model has none")
        if self.train.lora is not None and (
            builtin not in ("transformer", "gpt") or not self.init_from
        ):
            raise ValueError(
                "train.lora fine-tunes a text model (transformer or gpt) from init_from; "
                "name the model to start from"
            )
        if builtin == "gpt":
            other = [k for k in kinds if k != "memorization"]
            if other:
                raise ValueError(
                    f"evaluate.{other[0]} needs a classifier; a language model (gpt) is "
                    "audited by evaluate.memorization"
                )
        elif "memorization" in kinds:
            raise ValueError("evaluate.memorization audits a language model (model.builtin gpt)")
        if reads_text:
            asked = [k for k in ("robustness", "explain") if k in kinds]
            if asked:
                raise ValueError(
                    f"evaluate.{asked[0]} perturbs or attributes numeric inputs; a text model's "
                    "are token ids (membership_inference and fairness apply)"
                )
        return self

    @model_validator(mode="after")
    def _code_for_user_functions(self) -> TrainJob:
        if self.data is not None and self.code is None:
            raise ValueError("data.transform comes from a code package: name it with 'code'")
        return self


class EraseJob(_Strict):
    """Remove one data subject's rows from a dataset version (GDPR Art. 17): a new version
    without them; the old version's data keys are shredded unless a retention hold applies."""

    type: Literal["erase"]
    dataset: DatasetRef
    erasure: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    #: The subject id, sealed to the cluster's HPKE key: the control plane cannot read it.
    subject: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    #: Only count the subject's rows (where the subject is: lineage); change nothing.
    locate: bool = False


class EvaluateJob(_Strict):
    """Evaluate a registered model version on its own training data's held-out rows."""

    type: Literal["evaluate"]
    model: ModelRef
    evaluate: EvaluateConfig


class VerifyModelJob(_Strict):
    """Verify a sealed model version where it is stored (signature, every file's hash)."""

    type: Literal["verify-model"]
    model: ModelRef


class ExportModelJob(_Strict):
    """Re-encrypt a model version to another cluster's HPKE key (a signed transfer file)."""

    type: Literal["export-model"]
    model: ModelRef
    to_cluster: Name


class ImportModelJob(_Strict):
    """Verify and open a transfer file addressed to this cluster; register the model."""

    type: Literal["import-model"]
    source: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    model_name: Name


def site_training(job: FederatedJob, dataset: str) -> TrainJob:
    """A federated job seen as the training of one site's version: what the control plane
    checks at submit for each site, and what the aggregator chooses features with."""
    return TrainJob(
        type="train",
        dataset=dataset,
        model_name=job.model_name,
        target=job.target,
        features=job.features,
        sensitive_features=job.sensitive_features,
        model=job.model,
        train=job.train,
        purpose=job.purpose,
    )


#: Job types the control plane queues only through the ``datasets`` and ``models`` routes.
DATASET_JOB_TYPES = frozenset(
    {
        "ingest",
        "verify",
        "scan",
        "pseudonymize",
        "verify-model",
        "export-model",
        "import-model",
        "evaluate",
        "erase",
    }
)


class ServeJob(_Strict):
    """Run the inference server for a deployment (queued by 'bastion deploy create')."""

    type: Literal["serve"]
    deployment: Name
    model: ModelRef
    host: Annotated[str, StringConstraints(min_length=1, max_length=255)] = "127.0.0.1"
    port: int = Field(default=8443, ge=1, le=65535)
    tls_cert: Annotated[str, StringConstraints(max_length=4096)] | None = None
    tls_key: Annotated[str, StringConstraints(max_length=4096)] | None = None
    redis_url: Annotated[str, StringConstraints(max_length=1024)] | None = None
    #: How many servers share the address (SO_REUSEPORT); more than one needs Redis.
    replicas: int = Field(default=1, ge=1, le=16)
    serve: ServeConfig = Field(default_factory=ServeConfig)


Job = Annotated[
    SmokeJob
    | IngestJob
    | VerifyJob
    | ScanJob
    | PseudonymizeJob
    | TrainJob
    | VerifyModelJob
    | ExportModelJob
    | ImportModelJob
    | EvaluateJob
    | EraseJob
    | ServeJob
    | RegisterCodeJob
    | FederatedJob
    | FederatedSiteJob,
    Field(discriminator="type"),
]
#: Top-level keys of DESIGN §2's training spec, gathered into ``job: {type: train}``.
_TRAIN_KEYS = (
    "dataset",
    "target",
    "features",
    "sensitive_features",
    "model",
    "train",
    "model_name",
    "init_from",
    "evaluate",
    "purpose",
    "code",
    "data",
)


class Resources(_Strict):
    """What the job needs and may use: wall time, address space per process, CPU time per
    process, processes and threads at once, largest file it may write; GPUs, workers and
    CPUs per worker, which the control plane places on an agent that advertises them."""

    timeout_seconds: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    memory_mb: int = Field(default=4096, ge=64, le=1 << 20)
    cpu_seconds: int | None = Field(default=None, ge=1)
    processes: int = Field(default=512, ge=8, le=1 << 16)
    file_mb: int = Field(default=64 << 10, ge=1, le=1 << 24)
    gpus: int = Field(
        default=0, ge=0, le=16, description="GPUs the job is given (only these are visible)."
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Training processes; more than one needs data-parallel training.",
    )
    cpus_per_worker: int | None = Field(
        default=None, ge=1, le=256, description="CPUs each worker needs on its host."
    )
    restarts: int = Field(
        default=2,
        ge=0,
        le=100,
        description="Times a data-parallel group starts again from its last checkpoint "
        "after a worker dies.",
    )


class RunSpec(_Strict):
    """A run: ``job`` says what to do. A training run may also be written as DESIGN §2
    shows it, with ``dataset``, ``model``, ``train`` ... at the top level (the model is
    registered under ``model_name``, by default the run's name)."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    project: Name
    cluster: Name
    job: Job
    max_retries: int = Field(default=0, ge=0, le=10)
    resources: Resources = Field(default_factory=Resources)

    @model_validator(mode="before")
    @classmethod
    def _training_at_top_level(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "job" in data:
            return data
        if "federated" in data:
            return _federated_at_top_level(data)
        if not any(key in data for key in _TRAIN_KEYS):
            return data
        rest = {k: v for k, v in data.items() if k not in _TRAIN_KEYS}
        job = {"type": "train", **{k: data[k] for k in _TRAIN_KEYS if k in data}}
        job.setdefault("model_name", data.get("name"))
        return {**rest, "job": job}

    @model_validator(mode="after")
    def _workers_train(self) -> RunSpec:
        resources = self.resources
        if resources.workers > 1 and not isinstance(self.job, TrainJob):
            raise ValueError(
                f"resources.workers: {resources.workers} trains data-parallel; only train "
                f"jobs take more than one worker (this is a {self.job.type} job)"
            )
        if resources.workers > 1 and resources.gpus not in (0, resources.workers):
            raise ValueError(
                f"resources.gpus: {resources.gpus} for {resources.workers} workers; "
                "data-parallel training gives each worker one GPU (gpus: 0 or gpus = workers)"
            )
        return self

    @model_validator(mode="after")
    def _federated_on_the_aggregator(self) -> RunSpec:
        if isinstance(self.job, FederatedJob) and self.cluster != self.job.aggregator:
            raise ValueError(
                f"cluster {self.cluster!r}: a federated run is submitted to its aggregator "
                f"({self.job.aggregator!r})"
            )
        return self

    @model_validator(mode="after")
    def _half_precision_on_a_gpu(self) -> RunSpec:
        half = isinstance(self.job, TrainJob) and self.job.train.mixed_precision == "fp16"
        if half and self.resources.gpus == 0:
            raise ValueError(
                "train.mixed_precision fp16 runs on a GPU only; give resources.gpus, "
                "or use bf16 (which the CPU supports)"
            )
        return self


def _federated_at_top_level(data: dict[str, Any]) -> dict[str, Any]:
    """``federated: {clusters, aggregator, rounds, ...}`` beside ``datasets``, ``model`` and
    ``train``: the federated job; the run's cluster is the aggregator's."""
    federated = data["federated"]
    if not isinstance(federated, dict):
        return data  # the job's own validation names it
    moved = ("datasets", *_TRAIN_KEYS)
    rest = {k: v for k, v in data.items() if k not in (*moved, "federated")}
    job = {"type": "federated", **federated, **{k: data[k] for k in moved if k in data}}
    job.setdefault("model_name", data.get("name"))
    rest.setdefault("cluster", federated.get("aggregator"))
    return {**rest, "job": job}


_JOB_TYPES = frozenset({"smoke", "train", "federated", "federated-site", *DATASET_JOB_TYPES})


def _where(error: Mapping[str, Any]) -> str:
    parts = [str(part) for part in error.get("loc", ())]
    if parts[:1] == ["job"] and len(parts) > 1 and parts[1] in _JOB_TYPES:
        del parts[1]  # the union's tag: "job.steps", not "job.smoke.steps"
    if error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
        parts.append("type")
    return ".".join(parts) or "spec"


def _field_names(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[str]:
    """Every field name (and alias) of ``model`` and of the models nested in it."""
    seen = set() if seen is None else seen
    if model in seen:
        return set()
    seen.add(model)
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(field.alias or name)
        for nested in _models_in(field.annotation):
            names |= _field_names(nested, seen)
    return names


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for argument in get_args(annotation):
        yield from _models_in(argument)


@functools.cache
def _spec_vocabulary() -> tuple[str, ...]:
    return tuple(sorted(_field_names(RunSpec)))


def _problem(error: Mapping[str, Any]) -> str:
    """One validation error as a line; an unknown field gets a "did you mean" when one of the
    spec's field names is close to it."""
    text = f"{_where(error)}: {error['msg']}"
    loc = error.get("loc", ())
    if error.get("type") == "extra_forbidden" and loc:
        # A name the spec uses elsewhere is in the wrong place, not misspelt: no suggestion.
        unknown, vocabulary = str(loc[-1]), _spec_vocabulary()
        close = (
            []
            if unknown in vocabulary
            else difflib.get_close_matches(unknown, vocabulary, n=1, cutoff=0.75)
        )
        if close:
            text += f" (did you mean {close[0]!r}?)"
    return text


def parse_spec(data: Any, *, source: str = "spec") -> RunSpec:
    """Validate a spec document; :class:`InvalidSpec` names every bad field and why."""
    if not isinstance(data, dict):
        raise InvalidSpec(f"{source}: a run spec is a mapping of fields, got {type(data).__name__}")
    try:
        return RunSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors()[:10])
        raise InvalidSpec(f"{source}: {problems}") from None


def load_spec(path: Path) -> RunSpec:
    """Read and validate a YAML spec file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidSpec(f"{path}: no such file") from None
    if len(text) > 1 << 20:
        raise InvalidSpec(f"{path}: larger than 1 MiB")
    data = safe_yaml.load(text, source=str(path), error=InvalidSpec)
    return parse_spec(data, source=str(path))
