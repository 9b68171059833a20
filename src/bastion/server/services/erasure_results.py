"""What an erase job's reports change: its count of rows, the version made without the
subject (the old one shredded unless held), and the flags on models trained on erased data.

Called by the run and dataset services when the agent reports; the requests themselves
are in :mod:`bastion.server.services.privacy`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bastion.errors import Conflict, InvalidInput
from bastion.server.db.models import (
    DatasetVersion,
    ErasureRequest,
    Model,
    ModelVersion,
    Project,
    Run,
    utcnow,
)
from bastion.server.db.session import UnitOfWork
from bastion.spec import EraseJob, parse_dataset_ref

__all__ = ["note_new_version", "record_result"]


def _flag_models(unit: UnitOfWork, *, project: Project, dataset: str, flag: dict[str, Any]) -> None:
    rows = unit.session.execute(
        select(Model.name, ModelVersion)
        .join(ModelVersion, ModelVersion.model_id == Model.id)
        .where(Model.project_id == project.id)
    ).all()
    for name, version in rows:
        sites = version.evidence.get("datasets")  # a federated model: every site's version
        used = {
            version.evidence.get("dataset"),
            *(sites.values() if isinstance(sites, dict) else ()),
        }
        if dataset not in used:
            continue
        version.flags = {**version.flags, "trained_on_erased_data": flag}
        unit.record(
            "model.flagged",
            f"model:{project.name}/{name}@{version.version}",
            {"flag": "trained_on_erased_data", "erasure": str(flag["erasure"])},
        )


def record_result(
    unit: UnitOfWork, *, project: Project, run: Run, job: EraseJob, result: dict[str, Any]
) -> None:
    """An erase run's count of removed rows (aggregate only); flag the models it touches."""
    request = unit.session.get(ErasureRequest, job.erasure)
    if request is None or run.id not in request.run_ids:
        raise Conflict(f"run {run.id} belongs to no erasure request {job.erasure}")
    rows = result.get("rows_found")
    if not isinstance(rows, int) or rows < 0:
        raise InvalidInput("result.rows_found: expected a count")
    request.results = {**request.results, job.dataset: {"rows": rows, "run": run.id}}
    unit.record(
        f"privacy.{request.mode}.result",
        f"erasure:{request.id}",
        {"dataset": job.dataset, "rows": rows},
    )
    if rows and not job.locate:
        _flag_models(
            unit,
            project=project,
            dataset=job.dataset,
            flag={
                "erasure": request.id,
                "dataset": job.dataset,
                "recommendation": f"retrain without the erased rows (a new version replaces "
                f"{job.dataset})",
            },
        )


def note_new_version(
    unit: UnitOfWork,
    *,
    project: Project,
    job: EraseJob,
    parent: DatasetVersion,
    made: DatasetVersion,
    shredded_parent: bool,
) -> None:
    """The version without the subject exists; the old one is shredded (unless held)."""
    name, _ = parse_dataset_ref(job.dataset)
    replacement = f"{name}@{made.version}"
    request = unit.session.get(ErasureRequest, job.erasure)
    if request is not None:
        found = dict(request.results.get(job.dataset) or {})  # type: ignore[call-overload]
        found |= {"new_version": replacement, "shredded": shredded_parent}
        request.results = {**request.results, job.dataset: found}
    if shredded_parent:
        parent.shredded_at = utcnow()
        unit.record(
            "dataset.version.shredded",
            f"dataset:{project.name}/{job.dataset}",
            {"erasure": job.erasure, "replaced_by": replacement},
        )
    _flag_models(
        unit,
        project=project,
        dataset=job.dataset,
        flag={
            "erasure": job.erasure,
            "dataset": job.dataset,
            "recommendation": f"retrain on {replacement}",
        },
    )
