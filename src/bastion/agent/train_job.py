"""The ``train`` job as it runs in a job process: verified data in, a model directory out.

The agent has verified and decrypted the dataset version (and, on a resume, the last
sealed checkpoint) into ``inputs/``. The job validates the rows against the version's
schema, applies the privacy gate, trains with the spec's hooks, hands each checkpoint to
the agent for sealing (``sealing/epoch-N``), scans image models for backdoors, and leaves
the packaged model in ``outputs/model/`` for the agent to seal and register.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from safetensors.torch import load_file

from bastion.agent.data_jobs import schema_violations, staged_input, staged_schema
from bastion.agent.eval_job import Evaluation, evaluate_model
from bastion.agent.ranks import GroupLost, RankFinished
from bastion.agent.staging import OUTPUTS, REQUEST, SEALING
from bastion.agent.text_inputs import TrainInputs, generates, reads_text, text_inputs
from bastion.data.backdoor import spectral_scan
from bastion.data.feature_gate import check_features
from bastion.data.ingest import Loaded
from bastion.data.schema import MAX_CATEGORIES, ImageSchema, TableSchema
from bastion.errors import InvalidInput
from bastion.evaluate.attacks import input_bounds
from bastion.evaluate.robustness import accuracy
from bastion.files import atomic_write_bytes, ensure_private_dir
from bastion.progress import progress_line
from bastion.security.sealed import sha256_file
from bastion.spec import ExportModelJob, FederatedJob, ImportModelJob, TrainJob, VerifyModelJob
from bastion.train.data import fit_preprocessing, split_rows
from bastion.train.device import describe_device, job_device
from bastion.train.distributed import Group, default_threads, keeping_latest
from bastion.train.models import build_model, load_packaged, package_model, penultimate
from bastion.train.parallel import fit_parallel
from bastion.train.recipe import recipe
from bastion.train.trainer import Event, Trainer, TrainResult, TrainState

if TYPE_CHECKING:
    from bastion.agent.job import JobContext

__all__ = ["run_export_model", "run_import_model", "run_train", "run_verify_model"]


class _Reporter:
    """Per-epoch metrics to the control plane, and a progress line in the run's log."""

    def __init__(self, context: JobContext) -> None:
        self.context = context

    def __call__(self, event: Event, state: TrainState) -> None:
        if event is not Event.EPOCH_END:
            return
        latest = state.history[-1]
        for name in ("loss", "accuracy"):
            self.context.metric(name, state.epoch, latest[name])
        detail = f"loss {latest['loss']:.4f}, accuracy {latest['accuracy']:.4f}"
        if state.epsilon is not None:
            self.context.metric("epsilon", state.epoch, state.epsilon)
            detail += f", epsilon {state.epsilon:.3f}"
        self.context.log(progress_line("epoch", state.epoch, state.config.epochs, detail))


def _validate(data: Any, info: dict[str, Any], schema: TableSchema | ImageSchema) -> None:
    found = schema_violations(data, schema)
    if found:
        listed = "; ".join(f"{v.column}: {v.rule} ({v.rows} rows)" for v in found[:10])
        raise InvalidInput(f"{info['name']}@{info['version']} breaks its schema: {listed}")


def _features(
    context: JobContext, job: TrainJob, info: dict[str, Any], frame: Any, target: str
) -> list[str]:
    """The spec's features, or by default every usable column: not the target, not an
    identifier or suspected identifier (unless the override names it), and not a text
    column with more distinct values than a category has."""
    identifiers = list(info.get("identifier_columns", []))
    suspects = list(info.get("suspect_columns", []))
    allowed = set(job.train.allow_identifier_features)
    if job.features is not None:
        chosen = list(job.features)
    else:
        chosen, skipped = [], []
        flagged = {*identifiers, *suspects} - allowed
        for column in frame.columns:
            if column == target or column in flagged:
                continue
            numeric = pd.api.types.is_numeric_dtype(frame[column])
            if not numeric and frame[column].nunique() > MAX_CATEGORIES:
                skipped.append(column)
                continue
            chosen.append(column)
        if skipped:
            context.log(
                f"left out of the features: {', '.join(skipped)} (text with more than "
                f"{MAX_CATEGORIES} distinct values; name them under features to insist)"
            )
        doubted = [c for c in frame.columns if c in flagged and c in suspects and c != target]
        if doubted:
            context.log(
                f"left out of the features: {', '.join(doubted)} (suspected identifiers; "
                "pseudonymise them, or name them under the identifier override, audited)"
            )
    check_features(
        chosen,
        identifier_columns=identifiers,
        suspect_columns=suspects,
        allowed=job.train.allow_identifier_features,
        dataset=f"{info['name']}@{info['version']}",
    )
    return chosen


def _code_evidence(workdir: Path, job: TrainJob) -> dict[str, Any]:
    """The code package the model came from, pinned by its sealed manifest's hash."""
    if job.code is None:
        return {}
    staged = json.loads((workdir / "inputs" / "code" / "version.json").read_text())
    evidence: dict[str, Any] = {"code": job.code, "code_manifest_hash": staged["manifest_hash"]}
    if job.data is not None:
        evidence["data_transform"] = job.data.transform
    return evidence


def _transformed(context: JobContext, entrypoint: str, data: Loaded) -> Loaded:
    """The table as the code package's transform returns it (checked: still a table)."""
    module_name, function = entrypoint.split(":")
    try:
        transform = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise InvalidInput(f"data.transform {entrypoint!r}: {exc}") from None
    frame = transform(data.table().copy())
    if not isinstance(frame, pd.DataFrame) or frame.empty:
        raise InvalidInput(
            f"data.transform {entrypoint!r} returned {type(frame).__name__}, not a non-empty "
            "pandas DataFrame"
        )
    context.log(f"data.transform {entrypoint}: {len(frame)} rows, {len(frame.columns)} columns")
    return Loaded(kind="table", frame=frame)


def _hand_over(workdir: Path) -> Any:
    """Move a finished checkpoint where the agent seals it (a rename: all or nothing)."""

    def hand_over(path: Path, epoch: int) -> None:
        ensure_private_dir(workdir / SEALING)
        os.replace(path, workdir / SEALING / f"epoch-{epoch}")

    return hand_over


def _device(context: JobContext, job: TrainJob) -> torch.device:
    """Where the job trains (cuda when it was given GPUs), said in its log."""
    device = job_device(context.gpus)
    precision = job.train.mixed_precision
    context.log(
        f"training on {describe_device(device)}"
        + (f", {precision} mixed precision" if precision else "")
    )
    return device


def _train(
    context: JobContext,
    config: Any,
    model: torch.nn.Module,
    hooks: list[Any],
    *,
    x: torch.Tensor,
    y: torch.Tensor,
    bounds: tuple[Any, Any],
    device: torch.device,
) -> TrainResult:
    """Train alone, or with ``resources.workers`` processes under DDP (this process is
    rank 0 and the one that reports; see :mod:`bastion.train.parallel`)."""
    workdir = context.workdir
    resume = workdir / "inputs" / "checkpoint"
    if resume.is_dir():
        context.log(f"resuming from the sealed checkpoint of epoch {context.resume_from}")
    start = resume if resume.is_dir() else None
    if context.workers == 1:
        return Trainer(config, hooks, device=device).fit(
            model,
            x,
            y,
            resume=start,
            checkpoints=workdir / "checkpoints",
            on_checkpoint=_hand_over(workdir),
        )
    world = context.workers
    threads = context.cpus_per_worker or default_threads(world)
    torch.set_num_threads(threads)
    each = "1 CPU thread" if threads == 1 else f"{threads} CPU threads"
    where = " on Ray Train" if context.rendezvous else ""
    context.log(f"{world} workers train data-parallel{where}, {each} each")
    lower, upper = bounds
    folder = workdir / "parallel"
    ensure_private_dir(folder)
    if context.rendezvous is not None:
        return _train_rank(context, config, model, hooks, x=x, y=y, device=device, start=start)

    def fresh_hooks() -> list[Any]:  # every start of the group: a fresh accountant
        return [*recipe(model, config, lower=lower, upper=upper)[1], _Reporter(context)]

    return fit_parallel(
        config,
        model,
        x,
        y,
        world=world,
        hooks=fresh_hooks,
        gpus=context.gpus > 0,
        lower=lower,
        upper=upper,
        folder=folder,
        resume=start,
        on_checkpoint=_hand_over(workdir),
        restarts=context.restarts,
        threads=threads,
        say=context.log,
    )


def _train_rank(
    context: JobContext,
    config: Any,
    model: torch.nn.Module,
    hooks: list[Any],
    *,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    start: Path | None,
) -> TrainResult:
    """One rank of a group that Ray Train runs (the agent's Ray executor started this
    process for it). Rank 0 writes the checkpoints and keeps the newest where a restarted
    group resumes; a broken group ends the process for Ray Train to start it again; a
    rank other than 0 ends after its share (:class:`RankFinished`)."""
    folder = context.workdir / "parallel"
    latest = folder / "resume"
    begin = latest if latest.is_dir() else start
    if begin is latest:
        context.log("resuming the group from its newest checkpoint")
    leader = context.rank == 0
    group = Group(context.rank, context.workers, str(context.rendezvous))
    try:
        result = Trainer(config, hooks, device=device, group=group).fit(
            model,
            x,
            y,
            resume=begin,
            checkpoints=context.workdir / "checkpoints" if leader else None,
            on_checkpoint=keeping_latest(latest, _hand_over(context.workdir)) if leader else None,
        )
    except RuntimeError as exc:  # gloo's errors (DistBackendError is one) and lost peers
        raise GroupLost(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    if not leader:
        raise RankFinished
    return result


def _inputs(
    context: JobContext,
    job: TrainJob,
    *,
    data: Loaded,
    info: dict[str, Any],
    schema: TableSchema | ImageSchema,
    target: str | None,
) -> TrainInputs:
    config = job.train
    if generates(job):  # a language model: the text is its own target
        text = text_inputs(context, job, data=data, info=info, schema=schema, target="")
        context.log(f"{len(text.y)} rows: a language model of column {text.features[0]}")
        return text
    if data.kind == "table" and target is None:
        raise InvalidInput(f"{job.dataset} has no target column; name one in the spec")
    if reads_text(job):
        text = text_inputs(context, job, data=data, info=info, schema=schema, target=str(target))
        context.log(f"{len(text.y)} rows, classes {text.prep.classes}")
        return text
    features = []
    if data.kind == "table":
        features = _features(context, job, info, data.table(), str(target))
    prep = fit_preprocessing(data, target=target, features=features or None)
    x, y = prep.features(data), prep.labels(data)
    split, train_rows, test_rows = split_rows(y, holdout=config.holdout, seed=config.seed)
    context.log(f"{len(y)} rows, {x.shape[1:].numel()} inputs, classes {prep.classes}")
    return TrainInputs(prep, features, x, y, split, train_rows, test_rows)


def _with_adapters(context: JobContext, job: TrainJob, model: torch.nn.Module) -> torch.nn.Module:
    """With ``train.lora``: LoRA adapters on the named layers, everything else frozen."""
    spec = job.train.lora
    if spec is None:
        return model
    if context.workers > 1:
        raise InvalidInput("train.lora trains in one process; set resources.workers to 1")
    from bastion.train.lora import with_adapters  # noqa: PLC0415 - PEFT imports transformers

    adapted, trainable = with_adapters(model, spec)
    total = sum(p.numel() for p in adapted.parameters())
    context.log(
        f"LoRA rank {spec.rank} on {', '.join(spec.targets)}: {trainable} of {total} "
        "parameters train"
    )
    return adapted


def run_train(context: JobContext, job: TrainJob) -> None:
    device = _device(context, job)  # first: a GPU job that finds no GPU fails here
    workdir = context.workdir
    data, info = staged_input(workdir)
    # The exact schema (with a steward's edits): validation here and, in the model
    # package, at serving; the control plane's copy is rounded and redacted.
    schema = staged_schema(workdir, info)
    _validate(data, info, schema)
    if job.data is not None:
        data = _transformed(context, job.data.transform, data)
    target = job.target or info.get("target")
    config = job.train
    inputs = _inputs(context, job, data=data, info=info, schema=schema, target=target)
    prep, x, y, features = inputs.prep, inputs.x, inputs.y, inputs.features
    split, train_rows, test_rows = inputs.split, inputs.train_rows, inputs.test_rows
    torch.manual_seed(config.seed)  # the initial weights are part of "deterministic under a seed"
    model = build_model(job.model, input_shape=prep.input_shape, classes=len(prep.classes))
    initial = workdir / "inputs" / "init"
    if job.init_from is not None:
        try:
            model.load_state_dict(load_file(str(initial / "weights.safetensors")))
        except RuntimeError as exc:
            raise InvalidInput(
                f"{job.init_from} does not fit this run's model and data ({exc})"
            ) from None
        context.log(f"fine-tuning from {job.init_from}")
        model = _with_adapters(context, job, model)
    context.log(f"{split.train_rows} rows train the model, {split.test_rows} are held out")
    lower, upper = input_bounds(x, images=data.kind == "images")
    model, hooks, replaced = recipe(model, config, lower=lower, upper=upper)
    for what in replaced:
        context.log(f"replaced for DP-SGD: {what}")
    hooks.append(_Reporter(context))
    result = _train(
        context,
        config,
        model,
        hooks,
        x=x[train_rows],
        y=y[train_rows],
        bounds=(lower, upper),
        device=device,
    )
    if config.lora is not None:  # the adapters folded in: the plain architecture again
        from bastion.train.lora import merged  # noqa: PLC0415

        result.model = merged(result.model)
    evidence: dict[str, Any] = {
        "dataset": job.dataset,
        "purpose": job.purpose,
        "dataset_manifest_hash": info["manifest_hash"],
        "target": None if generates(job) else target,
        "features": features,
        "sensitive_features": list(job.sensitive_features),
        "classes": prep.classes,
        "model": job.model.model_dump(mode="json"),
        "train": config.model_dump(mode="json"),
        "workers": context.workers,
        "epsilon": result.epsilon,
        "delta": config.privacy.delta if config.privacy else None,
        "history": result.history,
        "train_accuracy": result.history[-1]["accuracy"] if result.history else None,
        "split": split.model_dump(),
        "test_accuracy": accuracy(result.model, x[test_rows], y[test_rows])
        if len(test_rows)
        else None,
        "identifier_overrides": sorted(set(features) & set(config.allow_identifier_features)),
        "replaced_modules": replaced,
        "initialized_from": (
            {"model": job.init_from, **json.loads((initial / "version.json").read_text())}
            if job.init_from
            else None
        ),
        **_code_evidence(workdir, job),
    }
    if inputs.canaries is not None:
        evidence["canaries"] = inputs.canaries
    if data.kind == "images":
        seen_x, seen_y = x[train_rows], y[train_rows]
        activations = penultimate(result.model, seen_x).numpy()
        scan = spectral_scan(activations, seen_y.numpy(), seen_x.numpy())
        evidence["backdoor_scan"] = scan.summary()
        context.log(
            f"backdoor scan: {len(scan.flagged)} suspicious training images; "
            f"classes {scan.summary()['poisoned_classes'] or 'none'} flagged"
        )
    if evidence["test_accuracy"] is not None:
        what = "next-token accuracy" if generates(job) else "accuracy"
        context.log(f"held-out {what} {evidence['test_accuracy']:.4f}")
    if job.evaluate is not None:
        subject = Evaluation(result.model, prep, data, x, y, train_rows, test_rows, evidence)
        evidence["evaluation"] = evaluate_model(context, subject, job.evaluate, device=device)
    package_for_sealing(
        workdir, job=job, model=result.model, prep=prep, schema=schema, evidence=evidence
    )


def package_for_sealing(
    workdir: Path,
    *,
    job: TrainJob | FederatedJob,
    model: torch.nn.Module,
    prep: Any,
    schema: TableSchema | ImageSchema,
    evidence: dict[str, Any],
) -> None:
    """outputs/model/: weights, config, schema, metadata; and the request to seal it (a
    trained model, or a federation's aggregate)."""
    folder = workdir / OUTPUTS / "model"
    ensure_private_dir(folder)
    evidence["weights_sha256"] = package_model(
        folder,
        model=model,
        spec=job.model,
        prep=prep,
        schema=schema.model_dump(mode="json"),
        metadata=evidence,
    )
    request = {"artifact": "model", "name": job.model_name, "evidence": evidence}
    atomic_write_bytes(workdir / OUTPUTS / REQUEST, json.dumps(request).encode())


def run_verify_model(context: JobContext, job: VerifyModelJob) -> str:
    """The agent verified signature and hashes while staging; the weights must also load."""
    folder = context.workdir / "inputs" / "model"
    info = json.loads((folder / "version.json").read_text())
    load_packaged(folder, job.model)
    digest = sha256_file(folder / "weights.safetensors")
    context.result(
        {"verified": True, "manifest_hash": info["manifest_hash"], "weights_sha256": digest}
    )
    return (
        f"{job.model}: manifest {info['manifest_hash'][:12]}, signature and every file "
        "verified; the weights load into the recorded model"
    )


def run_export_model(context: JobContext, job: ExportModelJob) -> None:
    """Check the staged model loads; the agent writes the transfer file (it holds the keys)."""
    load_packaged(context.workdir / "inputs" / "model", job.model)
    context.log(f"{job.model} verified; the agent encrypts it to cluster {job.to_cluster}")
    outputs = context.workdir / OUTPUTS
    ensure_private_dir(outputs)
    atomic_write_bytes(outputs / REQUEST, json.dumps({"artifact": "export"}).encode())


def run_import_model(context: JobContext, job: ImportModelJob) -> None:
    """The agent verified and opened the transfer; check it loads and hand it back to seal."""
    staged = context.workdir / "inputs" / "model"
    transfer = json.loads((context.workdir / "inputs" / "transfer.json").read_text())
    load_packaged(staged, job.model_name)
    origin = transfer["model"]
    context.log(
        f"model {origin['name']}@{origin['version']} from cluster {transfer['sender']} loads"
    )
    folder = context.workdir / OUTPUTS / "model"
    ensure_private_dir(folder)
    for path in staged.iterdir():
        atomic_write_bytes(folder / path.name, path.read_bytes())
    evidence = json.loads((folder / "metadata.json").read_text())
    evidence["imported_from"] = {"cluster": transfer["sender"], **origin}
    evidence["weights_sha256"] = sha256_file(folder / "weights.safetensors")
    request = {"artifact": "model", "name": job.model_name, "evidence": evidence}
    atomic_write_bytes(context.workdir / OUTPUTS / REQUEST, json.dumps(request).encode())
