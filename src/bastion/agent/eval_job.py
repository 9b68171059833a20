"""The evaluate stage: attacks and audits of a model on its held-out rows, in the job.

It runs at the end of a training run with an ``evaluate`` block (before packaging, so the
evidence is sealed with the model) and as the ``evaluate`` job (``bastion eval ...``) on
a registered version, whose training split it re-draws and checks. Only the summaries
leave the compute plane.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bastion.agent.data_jobs import staged_input
from bastion.agent.fanout import fanout_from_environment
from bastion.errors import InvalidInput
from bastion.evaluate.attacks import Lattice, image_lattice, input_bounds
from bastion.evaluate.config import EvaluateConfig, MemorizationConfig
from bastion.evaluate.fanout import InOrder
from bastion.evaluate.scorecard import served_robust_accuracy
from bastion.progress import progress_line
from bastion.spec import EvaluateJob
from bastion.train.data import Preprocessing, Split, split_rows
from bastion.train.device import describe_device, job_device, model_device, on_model
from bastion.train.models import load_packaged

if TYPE_CHECKING:
    from bastion.agent.job import JobContext
    from bastion.data.ingest import Loaded

__all__ = ["Evaluation", "evaluate_model", "run_evaluate"]


@dataclass
class Evaluation:
    """A trained model and the data it was trained on, split as in training."""

    model: torch.nn.Module
    prep: Preprocessing
    data: Loaded
    x: torch.Tensor
    y: torch.Tensor
    train_rows: np.ndarray
    test_rows: np.ndarray
    evidence: dict[str, Any]


def _headline(kind: str, summary: dict[str, Any]) -> str:
    if kind == "robustness":
        worst = min(summary["curve"], key=served_robust_accuracy)
        space = ", integer inputs" if summary.get("gated_space") == "integer" else ""
        return (
            f"clean accuracy {summary['clean_accuracy']:.3f}; lowest robust accuracy "
            f"{served_robust_accuracy(worst):.3f} ({worst['attack']}, eps {worst['eps']}{space})"
        )
    if kind == "membership":
        return (
            f"{summary['attack']} AUC {summary['auc']:.3f}, TPR at 1% FPR "
            f"{summary['tpr_at_1%_fpr']:.3f} on {summary['rows']} rows"
        )
    if kind == "fairness":
        gap = summary.get("max_demographic_parity_difference")
        gap = summary["max_accuracy_difference"] if gap is None else gap
        return f"largest gap between groups {gap if gap is None else round(gap, 3)}"
    if kind == "memorization":
        extracted = (
            f"; {summary['extracted_identifiers']} of {summary['identifiers_searched']} "
            f"training identifiers in {summary['samples']} samples"
            if "samples" in summary
            else ""
        )
        return (
            f"largest canary exposure {summary['max_exposure']:.2f} of "
            f"{summary['exposure_bound']:.2f} bits; {summary['completed']} of "
            f"{len(summary['canaries'])} canaries completed verbatim{extracted}"
        )
    return f"top features: {', '.join(summary.get('top_features', [])[:5]) or 'image maps'}"


def _lattice(subject: Evaluation) -> Lattice | None:
    """The integer pixels the inference server accepts (the exact schema is the images'
    dtype and range), or None for tables and float images."""
    if subject.prep.kind != "images":
        return None
    images = subject.data.arrays()[0]
    return image_lattice(
        dtype=str(images.dtype),
        minimum=float(images.min()),
        maximum=float(images.max()),
        value_range=subject.prep.value_range,
    )


def evaluate_model(
    context: JobContext,
    subject: Evaluation,
    config: EvaluateConfig,
    *,
    device: torch.device | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every evaluation the block asks for on ``device`` (the CPU by default); log a
    line for each. The model is back on the CPU afterwards."""
    try:
        subject.model.to(device or "cpu")
        return _evaluations(context, subject, config)
    finally:
        subject.model.to("cpu")


def _evaluations(
    context: JobContext, subject: Evaluation, config: EvaluateConfig
) -> dict[str, dict[str, Any]]:
    from bastion.evaluate.explain import evaluate_explanations  # noqa: PLC0415
    from bastion.evaluate.fairness import evaluate_fairness  # noqa: PLC0415
    from bastion.evaluate.membership import evaluate_membership  # noqa: PLC0415
    from bastion.evaluate.robustness import evaluate_robustness  # noqa: PLC0415

    x, y, prep, evidence = subject.x, subject.y, subject.prep, subject.evidence
    train = (x[subject.train_rows], y[subject.train_rows])
    test = (x[subject.test_rows], y[subject.test_rows])
    if len(test[1]) == 0:
        raise InvalidInput("the model was trained on every row; there are no held-out rows")
    seed = int(evidence["train"].get("seed", 0))
    model = subject.model.eval()
    results: dict[str, dict[str, Any]] = {}
    for kind in config.kinds:
        _applies(kind, prep, evidence)
        context.event("evaluate", "running", kind)
        if kind == "robustness" and config.robustness is not None:
            lower, upper = input_bounds(x, images=prep.kind == "images")
            results[kind] = evaluate_robustness(
                model,
                *test,
                config.robustness,
                lower=lower,
                upper=upper,
                lattice=_lattice(subject),
                seed=seed,
            )
        elif kind == "membership" and config.membership_inference is not None:
            # On a GPU the shadows train there, one after another; on the CPU they fan out.
            on_gpu = model_device(model).type == "cuda"
            fanout = InOrder() if on_gpu else fanout_from_environment()
            shadows = config.membership_inference.shadow_models
            if config.membership_inference.attack == "lira":
                where = "on the GPU, one at a time" if on_gpu else f"up to {fanout.width} at a time"
                context.log(f"training {shadows} shadow models, {where}")
            results[kind] = evaluate_membership(
                model,
                train=train,
                test=test,
                config=config.membership_inference,
                model_spec=evidence["model"],
                train_config=evidence["train"],
                classes=len(prep.classes),
                fanout=fanout,
                epsilon=evidence.get("epsilon"),
                seed=seed,
                progress=lambda done, total: context.log(
                    progress_line("shadow model", done, total, "trained")
                ),
            )
        elif kind == "fairness" and config.fairness is not None:
            results[kind] = _fairness(subject, config, evaluate_fairness, test)
        elif kind == "explain" and config.explain is not None:
            results[kind] = evaluate_explanations(model, *test, prep, config.explain, seed=seed)
        elif kind == "memorization" and config.memorization is not None:
            results[kind] = _memorization(subject, config.memorization, seed)
        context.log(f"evaluate {kind}: {_headline(kind, results[kind])}")
    return results


def _language_model(evidence: dict[str, Any]) -> bool:
    return bool(evidence.get("model", {}).get("builtin") == "gpt")


def _applies(kind: str, prep: Preprocessing, evidence: dict[str, Any]) -> None:
    """Refuse, in one line, an evaluation that does not apply to this kind of model."""
    if _language_model(evidence):
        if kind != "memorization":
            raise InvalidInput(
                f"evaluate {kind} needs a classifier; a language model's audit is memorization"
            )
    elif kind == "memorization":
        raise InvalidInput("evaluate memorization audits a language model (model.builtin gpt)")
    elif prep.kind == "text" and kind in ("robustness", "explain"):
        raise InvalidInput(
            f"evaluate {kind} perturbs or attributes numeric inputs; a text model's are "
            "token ids (membership_inference and fairness apply)"
        )


def _memorization(subject: Evaluation, config: MemorizationConfig, seed: int) -> dict[str, Any]:
    """The canary audit of the canaries the training run wrote, and the extraction check on
    samples of the model (counts and ranks only: no secret, sample or identifier leaves)."""
    from bastion.agent.text_inputs import canaries_of  # noqa: PLC0415
    from bastion.evaluate.memorization import canary_audit, extraction_check  # noqa: PLC0415

    canaries = canaries_of(subject.evidence)
    if not canaries:
        raise InvalidInput(
            "the model was trained without canaries; give its training spec "
            "evaluate.memorization to audit it"
        )
    found = canary_audit(
        subject.model,
        subject.prep.tokenizer,
        canaries,
        max_length=subject.prep.max_length,
        candidates=config.candidates,
        seed=seed,
    )
    extraction: dict[str, Any] = {}
    if config.samples:
        column = str(subject.prep.text_column)
        texts = subject.data.table()[column].fillna("").astype(str).iloc[subject.train_rows]
        checked = extraction_check(
            subject.model,
            subject.prep.tokenizer,
            texts.tolist(),
            samples=config.samples,
            max_length=subject.prep.max_length,
            seed=seed,
        )
        extraction = {
            "samples": checked.samples,
            "identifiers_searched": checked.identifiers,
            "extracted_identifiers": checked.extracted,
        }
    return {
        **extraction,
        "candidates": config.candidates,
        "exposure_bound": found[0].exposure_bound,
        "max_exposure": max(result.exposure for result in found),
        "completed": sum(result.completed for result in found),
        "canaries": [
            {
                "repeats": result.repeats,
                "exposure": result.exposure,
                "rank": result.rank,
                "completed": result.completed,
            }
            for result in found
        ],
    }


def _fairness(
    subject: Evaluation,
    config: EvaluateConfig,
    evaluate: Any,
    test: tuple[torch.Tensor, torch.Tensor],
) -> dict[str, Any]:
    names = list(subject.evidence.get("sensitive_features") or [])
    if subject.prep.kind == "images" or not names:
        raise InvalidInput(
            "fairness needs sensitive_features (table columns) named in the training spec"
        )
    frame = subject.data.table()
    with torch.no_grad():
        predicted = subject.model(on_model(subject.model, test[0])).argmax(dim=1).cpu().numpy()
    sensitive = {name: frame[name].iloc[subject.test_rows] for name in names}
    summary: dict[str, Any] = evaluate(
        test[1].numpy(),
        predicted,
        sensitive,
        classes=subject.prep.classes,
        config=config.fairness,
    )
    return summary


def run_evaluate(context: JobContext, job: EvaluateJob) -> str:
    """Evaluate a registered version; the summaries go to the control plane as the result."""
    device = job_device(context.gpus)  # first: a job given GPUs that finds none fails here
    folder = context.workdir / "inputs" / "model"
    model, prep = load_packaged(folder, job.model)
    evidence = json.loads((folder / "metadata.json").read_text())
    if _language_model(evidence):
        raise InvalidInput(
            f"{job.model} is a language model: its canary audit runs in its training run "
            "(evaluate.memorization), where the canaries are written"
        )
    data, info = staged_input(context.workdir)
    if "split" not in evidence:
        raise InvalidInput(f"{job.model} records no held-out split; retrain it to evaluate it")
    recorded = Split.model_validate(evidence["split"])
    x, y = prep.features(data), prep.labels(data)
    split, train_rows, test_rows = split_rows(y, holdout=recorded.holdout, seed=recorded.seed)
    if split.train_index_sha256 != recorded.train_index_sha256:
        raise InvalidInput(
            f"{info['name']}@{info['version']} does not split into the rows {job.model} was "
            "trained on; the membership and held-out figures would be wrong"
        )
    subject = Evaluation(model, prep, data, x, y, train_rows, test_rows, evidence)
    context.log(f"evaluating on {describe_device(device)}")
    results = evaluate_model(context, subject, job.evaluate, device=device)
    context.result({"model": job.model, "evaluations": results})
    return f"{job.model}: {', '.join(results)} evaluated; the evidence is stored with the version"
