"""Evaluations of model versions: recorded from the compute plane, listed, made into cards.

Evidence arrives two ways, both bound to a run the caller may report for: with the model
version a training run registers (its ``evaluate`` block), and as the result of an
``evaluate`` run on an existing version (``bastion eval ...``). Rows are append-only;
the newest of each kind is the current one.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.errors import InvalidInput, NotFound
from bastion.evaluate.card import build_card
from bastion.evaluate.config import EVALUATION_KINDS
from bastion.server.db.models import (
    Dataset,
    DatasetVersion,
    Evaluation,
    ModelVersion,
    Project,
    Run,
)
from bastion.server.db.session import UnitOfWork
from bastion.server.services import code as code_service
from bastion.spec import parse_dataset_ref

__all__ = [
    "MAX_SUMMARY_BYTES",
    "current_evaluations",
    "list_evaluations",
    "model_card",
    "record_evaluations",
]

#: A summary is aggregates: a robustness curve, an ROC curve, a fairness table, maps.
MAX_SUMMARY_BYTES = 256 * 1024

#: The headline numbers copied into the audit event of each kind.
_HEADLINES = {
    "robustness": ("clean_accuracy",),
    "membership": ("attack", "auc", "tpr_at_1%_fpr", "epsilon"),
    "fairness": ("max_demographic_parity_difference", "max_equalized_odds_difference"),
    "explain": ("top_features",),
    "memorization": ("max_exposure", "completed", "extracted_identifiers"),
}


def record_evaluations(
    unit: UnitOfWork,
    *,
    project: Project,
    version: ModelVersion,
    reference: str,
    run: Run,
    results: Any,
) -> list[Evaluation]:
    """Store each kind's summary; a repeated report of the same run changes nothing."""
    if not isinstance(results, dict) or not results:
        raise InvalidInput("evaluations: expected a mapping of kind to summary")
    unknown = sorted(set(results) - set(EVALUATION_KINDS))
    if unknown:
        raise InvalidInput(
            f"evaluations: unknown kind(s) {', '.join(unknown)}; "
            f"known: {', '.join(EVALUATION_KINDS)}"
        )
    for kind, summary in results.items():
        if not isinstance(summary, dict):
            raise InvalidInput(f"evaluations.{kind}: expected a mapping")
        if len(json.dumps(summary)) > MAX_SUMMARY_BYTES:
            raise InvalidInput(f"evaluations.{kind}: larger than {MAX_SUMMARY_BYTES} bytes")
    recorded = unit.session.scalars(
        select(Evaluation).where(
            Evaluation.model_version_id == version.id, Evaluation.run_id == run.id
        )
    ).all()
    if recorded:
        return list(recorded)
    rows = [
        Evaluation(model_version_id=version.id, run_id=run.id, kind=kind, summary=summary)
        for kind, summary in results.items()
    ]
    unit.session.add_all(rows)
    for kind, summary in results.items():
        headline = {key: _auditable(summary[key]) for key in _HEADLINES[kind] if key in summary}
        unit.record(
            "model.evaluation",
            f"model:{project.name}/{reference}",
            {"kind": kind, "run": run.id, **headline},
        )
    return rows


def _auditable(value: Any) -> Any:
    """Audit details hold no floats (canonical JSON): numbers go in as fixed-point text."""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        return [_auditable(item) for item in value]
    return value


def list_evaluations(session: Session, version: ModelVersion) -> list[Evaluation]:
    query = select(Evaluation).where(Evaluation.model_version_id == version.id)
    return list(session.scalars(query.order_by(Evaluation.created_at, Evaluation.kind)))


def current_evaluations(session: Session, version: ModelVersion) -> dict[str, dict[str, Any]]:
    """The newest summary of each kind; robustness curves of the same norm are merged
    (the newest figure for each attack and eps), so a later run at another eps adds to
    the curve instead of hiding it."""
    rows = list_evaluations(session, version)
    current = {row.kind: dict(row.summary) for row in rows}
    robustness = current.get("robustness")
    if robustness is not None:
        points: dict[tuple[str, float], dict[str, Any]] = {}
        merged = 0
        for row in rows:  # oldest first: newer points overwrite older ones
            if row.kind == "robustness" and row.summary.get("norm") == robustness["norm"]:
                merged += 1
                curve: Any = row.summary.get("curve", [])
                for point in curve:
                    points[(str(point["attack"]), float(point["eps"]))] = point
        robustness["curve"] = [points[key] for key in sorted(points)]
        robustness["evaluations_merged"] = merged
    return current


def _isolation(session: Session, run_id: str | None) -> str | None:
    """How the run that trained a version ran its attempts (None: not recorded)."""
    run = session.get(Run, run_id) if run_id else None
    return run.isolation if run is not None else None


def _code_reviews(session: Session, *, project: Project, ref: object) -> list[dict[str, Any]]:
    """The reviews of the code version a model was built from (none for built-in models)."""
    if not isinstance(ref, str):
        return []
    name, number = parse_dataset_ref(ref)
    try:
        row = code_service.get_version(session, project=project, name=name, version=number)
    except NotFound:
        return []
    reviews: list[dict[str, Any]] = code_service.describe(session, row)["reviews"]
    return [{"reviewer": r["reviewer"], "verdict": r["verdict"]} for r in reviews]


def model_card(
    session: Session, *, project: Project, name: str, row: ModelVersion
) -> dict[str, Any]:
    """The version's card from its evidence, newest evaluations and training data's scans."""
    summaries: dict[str, Any] | None = None
    dataset = row.evidence.get("dataset")
    if isinstance(dataset, str) and "imported_from" not in row.evidence:
        data_name, number = parse_dataset_ref(dataset)
        found = session.scalars(
            select(DatasetVersion)
            .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
            .where(
                Dataset.project_id == project.id,
                Dataset.name == data_name,
                DatasetVersion.version == number,
            )
        ).first()
        summaries = dict(found.summaries) if found is not None else None
    version = {
        "version": row.version,
        "stage": row.stage,
        "run_id": row.run_id,
        "created_at": row.created_at.isoformat(),
        "evidence": row.evidence,
        "signature": row.signature,
        "manifest_hash": row.manifest_hash,
        "isolation": _isolation(session, row.run_id),
        "code_reviews": _code_reviews(session, project=project, ref=row.evidence.get("code")),
    }
    current = current_evaluations(session, row)
    return build_card(name=name, version=version, evaluations=current, dataset_summaries=summaries)
