"""Datasets in the control plane: names, versions the compute plane sealed, data jobs.

The control plane never sees rows. It queues dataset jobs (register, verify, scan,
pseudonymise) for the cluster that holds the data, and records the version the
agent reports after sealing: published schema, row count, manifest hash, signature, scan
summaries. The published schema names no value of a row (identifier columns redacted,
bounds rounded, rare categories withheld: :mod:`bastion.data.publish`); the exact one stays
in the compute plane. A version is immutable except for its schema, which a data steward
may correct (audited); the compute plane applies the correction to the exact schema.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.data.feature_gate import check_features
from bastion.data.publish import unpublished_columns
from bastion.data.schema import TableSchema, parse_schema
from bastion.errors import (
    Conflict,
    InvalidInput,
    InvalidSpec,
    NotAuthorized,
    NotFound,
    PolicyViolation,
)
from bastion.server.caller import Identity
from bastion.server.db.models import Cluster, Dataset, DatasetVersion, ModelVersion, Project, Run
from bastion.server.db.session import UnitOfWork
from bastion.server.services import code as code_service
from bastion.server.services.clusters import get_cluster
from bastion.server.services.erasure_results import note_new_version
from bastion.server.services.jobs import ACTIVE_STATUSES, create_run
from bastion.server.services.models import get_model_version
from bastion.spec import DATASET_JOB_TYPES, RunSpec, TrainJob, parse_dataset_ref, parse_spec
from bastion.train.config import EntrypointModel

__all__ = [
    "check_training",
    "create_dataset",
    "edit_schema",
    "get_dataset",
    "get_version",
    "lease_inputs",
    "list_datasets",
    "list_versions",
    "record_version",
    "submit_job",
    "submit_training",
    "summaries",
    "version_rows",
    "version_view",
]


def get_dataset(session: Session, *, project: Project, name: str) -> Dataset:
    dataset = session.scalars(
        select(Dataset).where(Dataset.project_id == project.id, Dataset.name == name)
    ).first()
    if dataset is None:
        raise NotFound(f"dataset {name!r} does not exist in project {project.name!r}")
    return dataset


def create_dataset(unit: UnitOfWork, *, project: Project, name: str) -> Dataset:
    exists = unit.session.scalars(
        select(Dataset).where(Dataset.project_id == project.id, Dataset.name == name)
    ).first()
    if exists is not None:
        raise Conflict(f"dataset {name!r} already exists in project {project.name!r}")
    dataset = Dataset(project_id=project.id, name=name)
    unit.session.add(dataset)
    unit.session.flush()
    unit.record("dataset.create", f"dataset:{project.name}/{name}")
    return dataset


def get_version(session: Session, *, project: Project, name: str, version: int) -> DatasetVersion:
    dataset = get_dataset(session, project=project, name=name)
    row = session.scalars(
        select(DatasetVersion).where(
            DatasetVersion.dataset_id == dataset.id, DatasetVersion.version == version
        )
    ).first()
    if row is None:
        raise NotFound(f"dataset version {name}@{version} does not exist in {project.name!r}")
    return row


def version_view(session: Session, row: DatasetVersion) -> dict[str, Any]:
    """A version as the API shows it (with its cluster's name)."""
    cluster = session.get(Cluster, row.cluster_id) if row.cluster_id else None
    return {
        "version": row.version,
        "schema_": row.schema_,
        "row_count": row.row_count,
        "manifest_hash": row.manifest_hash,
        "signature": row.signature,
        "summaries": row.summaries,
        "purpose": row.purpose,
        "target": row.target,
        "subject_id_column": row.subject_id_column,
        "parent_version": row.parent_version,
        "shredded_at": row.shredded_at,
        "retention_hold": row.retention_hold,
        "cluster": cluster.name if cluster else None,
        "run_id": row.run_id,
        "schema_edited": row.schema_edited_by is not None,
        "created_at": row.created_at,
    }


# -- data jobs ------------------------------------------------------------------------------


def submit_job(
    unit: UnitOfWork,
    *,
    project: Project,
    name: str,
    user_id: str,
    job: dict[str, Any],
    cluster: str | None = None,
) -> Run:
    """Queue a dataset job on the cluster that holds the data (or, to register, the one named).

    A registration creates the dataset's name only when its first version is recorded, so
    one that fails leaves nothing behind; jobs on a version check that the version exists
    and run where it lives.
    """
    if job["type"] in ("ingest", "import-model"):
        if cluster is None:  # pragma: no cover - the register/import routes always name one
            raise InvalidInput("name the cluster whose host holds the file")
        label = f"{'register' if job['type'] == 'ingest' else 'import'} {name}"
    else:
        ref = job.get("dataset") or job["model"]
        ref_name, number = parse_dataset_ref(ref)
        row: DatasetVersion | ModelVersion = (
            get_model_version(unit.session, project=project, name=ref_name, version=number)
            if "model" in job
            else get_version(unit.session, project=project, name=ref_name, version=number)
        )
        holder = unit.session.get(Cluster, row.cluster_id) if row.cluster_id else None
        if holder is None:
            raise Conflict(f"{ref} is not held by any cluster")
        _not_shredded(row, ref)
        cluster = holder.name
        label = f"{job['type']} {ref}"
        if job["type"] == "evaluate":
            data = _trained_on(unit.session, project=project, ref=ref)
            data_name, data_number = parse_dataset_ref(data)
            held = get_version(unit.session, project=project, name=data_name, version=data_number)
            if held.cluster_id != row.cluster_id:
                raise Conflict(f"{ref} was trained on {data}, which is not on {cluster!r}")
        if job["type"] == "export-model":
            target = get_cluster(unit.session, job["to_cluster"])
            if not target.hybrid_public_keyset:
                raise Conflict(f"cluster {target.name!r} has no agent (no public key) yet")
            if target.name == cluster:
                raise InvalidInput(f"{ref} already lives on {cluster!r}")
    get_cluster(unit.session, cluster)
    spec = parse_spec(
        {"name": label, "project": project.name, "cluster": cluster, "job": job},
        source="dataset job",
    )
    return create_run(unit, project=project, spec=spec, user_id=user_id, data_job=True)


def _not_shredded(row: DatasetVersion | ModelVersion, ref: str) -> None:
    if isinstance(row, DatasetVersion) and row.shredded_at is not None:
        raise Conflict(
            f"{ref} was crypto-shredded by an erasure request; use the version that replaced it"
        )


def _trained_on(session: Session, *, project: Project, ref: str) -> str:
    """The dataset version a model version was trained on, with its held-out split."""
    name, number = parse_dataset_ref(ref)
    evidence = get_model_version(session, project=project, name=name, version=number).evidence
    dataset = evidence.get("dataset")
    if not isinstance(dataset, str) or "split" not in evidence or "imported_from" in evidence:
        raise Conflict(
            f"{ref} records no training split on this cluster (imported, or trained before "
            "held-out rows were kept); evaluate it where it was trained, or retrain it"
        )
    return dataset


def _version_info(session: Session, dataset: Dataset, row: DatasetVersion) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "version": row.version,
        "manifest_hash": row.manifest_hash,
        "schema": row.schema_,
        "target": row.target,
        "subject_id_column": row.subject_id_column,
        "kind": row.schema_.get("kind", "table"),
        "identifier_columns": row.summaries.get("identifier_columns", []),
        "suspect_columns": row.summaries.get("suspect_columns", []),
        # The scan's entity per column (names, types and counts): a pseudonymisation spells
        # each column's values canonically before it pseudonymises them.
        "pii": row.summaries.get("pii", {}),
        "retention_hold": row.retention_hold,
    }


def lease_inputs(session: Session, *, run: Run, project: Project) -> dict[str, Any]:
    """The dataset versions a leased run reads, so the agent can verify and stage them.

    A job on a version gets it as ``input``; a registration gets the dataset's latest
    version on the same cluster as ``baseline`` (for the drift comparison).
    """
    return job_inputs(
        session, job=run.spec.get("job", {}), project=project, cluster_id=run.cluster_id
    )


def job_inputs(
    session: Session, *, job: Any, project: Project, cluster_id: str | None
) -> dict[str, Any]:
    """What :func:`lease_inputs` stages for a job description (also a hot-swap's model)."""
    kinds = {*DATASET_JOB_TYPES, "train", "serve", "federated", "federated-site"}
    if not isinstance(job, dict) or job.get("type") not in kinds:
        return {}
    if job["type"] == "federated":  # the aggregator's cluster's own version: its schema
        job = {**job, "dataset": job["datasets"][job["aggregator"]]}
    if job["type"] == "ingest":
        dataset = session.scalars(
            select(Dataset).where(Dataset.project_id == project.id, Dataset.name == job["dataset"])
        ).first()
        if dataset is None:
            return {}
        latest = session.scalars(
            select(DatasetVersion)
            .where(
                DatasetVersion.dataset_id == dataset.id,
                DatasetVersion.cluster_id == cluster_id,
            )
            .order_by(DatasetVersion.version.desc())
            .limit(1)
        ).first()
        return {"baseline": _version_info(session, dataset, latest)} if latest else {}
    if job["type"] == "import-model":
        # Not staged from storage: the agent opens the transfer file with these keys.
        signers = session.execute(select(Cluster.name, Cluster.signing_public_key)).all()
        return {"transfer": {"trusted_senders": {n: k for n, k in signers if k}}}
    inputs: dict[str, Any] = {}
    if job["type"] == "export-model":
        target = session.scalars(select(Cluster).where(Cluster.name == job["to_cluster"])).one()
        inputs["transfer"] = {
            "recipient": target.name,
            "recipient_keyset": target.hybrid_public_keyset,
        }
    for role, key in (("model", "model"), ("init", "init_from")):
        if job.get(key) and (job["type"] not in ("train", "federated") or role == "init"):
            name, number = parse_dataset_ref(str(job[key]))
            model = get_model_version(session, project=project, name=name, version=number)
            inputs[role] = {"name": name, "version": number, "manifest_hash": model.manifest_hash}
    if job["type"] in ("evaluate", "serve"):  # evaluated / guarded with its training rows
        job = {**job, "dataset": _trained_on(session, project=project, ref=str(job["model"]))}
    if "dataset" not in job:
        return inputs
    name, number = parse_dataset_ref(str(job["dataset"]))
    row = get_version(session, project=project, name=name, version=number)
    dataset = get_dataset(session, project=project, name=name)
    return {**inputs, "input": _version_info(session, dataset, row)}


def purposes(declared: str) -> list[str]:
    """A dataset's declared purposes: its purpose text, several separated by ';'."""
    return [part.strip() for part in declared.split(";") if part.strip()]


def check_purpose(purpose: str, *, declared: str, dataset: str) -> None:
    """Purpose limitation (GDPR Art. 5(1)(b)): refuse a run whose purpose the dataset's
    declared purposes do not include (compared without case and surrounding spaces)."""
    allowed = purposes(declared)
    if not allowed:
        return  # nothing declared: the compliance report flags the dataset instead
    if not purpose.strip():
        raise PolicyViolation(
            f"{dataset} may be used only for: {'; '.join(allowed)}; declare the run's purpose "
            "(purpose: ...) "
        )
    if purpose.strip().casefold() not in {p.casefold() for p in allowed}:
        raise PolicyViolation(
            f"purpose {purpose.strip()!r} is not one {dataset} was collected for "
            f"({'; '.join(allowed)}); purpose limitation (GDPR Art. 5(1)(b))"
        )


def submit_training(unit: UnitOfWork, *, project: Project, spec: RunSpec, user_id: str) -> Run:
    """Queue a training run after the checks of :func:`check_training`; an identifier
    feature the spec allows anyway is recorded in the audit log."""
    job = spec.job
    if job.type != "train":  # pragma: no cover - the route sends only training runs here
        raise InvalidInput("not a training run")
    _, overridden = check_training(unit, project=project, job=job, cluster=spec.cluster)
    run = create_run(unit, project=project, spec=spec, user_id=user_id)
    if job.train.allow_identifier_features:
        unit.record(
            "run.privacy_override",
            f"run:{run.id}",
            {
                "dataset": job.dataset,
                "identifier_features": sorted(job.train.allow_identifier_features),
                "used": overridden,
            },
        )
    return run


def check_training(
    unit: UnitOfWork, *, project: Project, job: TrainJob, cluster: str
) -> tuple[DatasetVersion, list[str]]:
    """The checks the control plane can make from metadata before training on ``cluster``;
    the version and the identifier columns the spec uses anyway.

    (1) The dataset version exists and lives on the run's cluster.
    (2) A target is known (the spec's or the version's) and every named column exists.
    (3) Purpose limitation: a dataset that declares purposes is used only for one of them.
    (4) The privacy gate: identifier and suspected identifier columns are no features
        unless explicitly overridden.
    """
    name, number = parse_dataset_ref(job.dataset)
    # (1) ...
    row = get_version(unit.session, project=project, name=name, version=number)
    _not_shredded(row, job.dataset)
    holder = unit.session.get(Cluster, row.cluster_id) if row.cluster_id else None
    if holder is None or holder.name != cluster:
        where = holder.name if holder else "no cluster"
        raise Conflict(f"{job.dataset} lives on {where!r}; submit the run to that cluster")
    # (2) ...
    images = row.schema_.get("kind") == "images"
    target = job.target or row.target
    if target is None and not images:
        raise InvalidSpec(f"job.target: {job.dataset} has no target column; name one")
    if images and (job.target or job.features):
        raise InvalidSpec(f"job: {job.dataset} holds images; it takes no target or features")
    declared = row.schema_.get("columns", [])
    columns = {c.get("name") for c in declared} if isinstance(declared, list) else set()
    named = {*(job.features or []), *job.sensitive_features, *([target] if target else [])}
    unknown = sorted(c for c in named if c not in columns) if columns else []
    if unknown:
        raise InvalidSpec(f"job: column(s) not in {job.dataset}: {', '.join(unknown)}")
    if job.init_from is not None:
        base_name, base_number = parse_dataset_ref(job.init_from)
        base = get_model_version(unit.session, project=project, name=base_name, version=base_number)
        if base.cluster_id != row.cluster_id:
            raise Conflict(
                f"{job.init_from} is not on {cluster!r}; export it there first "
                "('bastion model export', then 'bastion model import')"
            )
    if job.code is not None and row.cluster_id is not None:
        code_service.registered(
            unit.session, project=project, ref=job.code, cluster_id=row.cluster_id
        )
    if isinstance(job.model, EntrypointModel) and job.code is None:
        raise InvalidSpec(
            f"model.entrypoint {job.model.entrypoint!r}: name the code package it comes from "
            "('code: NAME@V'; push it with 'bastion code push')"
        )
    # (3) ...
    check_purpose(job.purpose, declared=row.purpose, dataset=job.dataset)
    # (4) ...
    overridden = check_features(
        job.features or [],
        identifier_columns=_names(row.summaries, "identifier_columns"),
        suspect_columns=_names(row.summaries, "suspect_columns"),
        allowed=job.train.allow_identifier_features,
        dataset=job.dataset,
    )
    return row, overridden


def _names(summaries: dict[str, Any], key: str) -> list[str]:
    """A list of column names the version's summaries record under ``key``."""
    listed = summaries.get(key, [])
    return [str(c) for c in listed] if isinstance(listed, list) else []


# -- versions -------------------------------------------------------------------------------


def record_version(
    unit: UnitOfWork,
    *,
    project: Project,
    name: str,
    caller: Identity,
    fields: dict[str, Any],
) -> DatasetVersion:
    """Record the version an agent sealed for a registration, pseudonymisation or erasure run.

    (1) The run must exist in this project, be active, and be leased by this agent.
    (2) It must be a job that makes a version of this dataset.
    (3) One run makes one version: a repeated report returns the recorded one.
    (4) The schema is the published one: no value of an identifier column is stored; the
        suspected identifiers are listed by name, each a column of that schema.
    """
    run = unit.session.get(Run, fields["run_id"])
    # (1) ...
    if run is None or run.project_id != project.id:
        raise NotFound(f"run {fields['run_id']} does not exist in project {project.name!r}")
    if run.leased_by != caller.user_id:
        raise NotAuthorized("only the agent holding the run's lease records its dataset version")
    # (2) ...
    spec = RunSpec.model_validate(run.spec)
    job = spec.job
    if job.type == "ingest":
        made_from = None
        target_name = job.dataset
    elif job.type in ("pseudonymize", "erase"):
        target_name, made_from = parse_dataset_ref(job.dataset)
    else:
        raise Conflict(f"run {run.id} is a {job.type} job; it makes no dataset version")
    if target_name != name:
        raise Conflict(f"run {run.id} makes a version of {target_name!r}, not {name!r}")
    dataset = unit.session.scalars(
        select(Dataset).where(Dataset.project_id == project.id, Dataset.name == name)
    ).first()
    if dataset is None and job.type == "ingest":  # a registration's first version names it
        dataset = create_dataset(unit, project=project, name=name)
    elif dataset is None:
        raise NotFound(f"dataset {name!r} does not exist in project {project.name!r}")
    # (3) ...
    existing = unit.session.scalars(
        select(DatasetVersion).where(DatasetVersion.run_id == run.id)
    ).first()
    if existing is not None:
        return existing
    if run.status not in ACTIVE_STATUSES:
        raise Conflict(f"run {run.id} is {run.status}; it can no longer record a version")
    # (4) ...
    _check_published(name, fields)
    parent = (
        get_version(unit.session, project=project, name=name, version=made_from)
        if made_from is not None
        else None
    )
    latest = unit.session.scalar(
        select(func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == dataset.id)
    )
    row = DatasetVersion(
        dataset_id=dataset.id,
        version=(latest or 0) + 1,
        schema_=fields["schema_"],
        row_count=fields["row_count"],
        manifest_hash=fields["manifest_hash"],
        signature=fields["signature"],
        summaries=fields["summaries"],
        purpose=job.purpose if job.type == "ingest" else (parent.purpose if parent else ""),
        target=job.target if job.type == "ingest" else (parent.target if parent else None),
        subject_id_column=(
            job.subject_id_column
            if job.type == "ingest"
            else (parent.subject_id_column if parent else None)
        ),
        parent_version=made_from,
        cluster_id=run.cluster_id,
        run_id=run.id,
        created_by=run.created_by,
    )
    unit.session.add(row)
    unit.session.flush()
    unit.record(
        "dataset.version.create",
        f"dataset:{project.name}/{name}@{row.version}",
        {
            "manifest_hash": row.manifest_hash,
            "row_count": row.row_count,
            "run": run.id,
            "parent_version": made_from,
        },
    )
    if job.type == "erase" and parent is not None:
        note_new_version(
            unit,
            project=project,
            job=job,
            parent=parent,
            made=row,
            shredded_parent=bool(fields.get("shredded_parent")),
        )
    return row


def _check_published(name: str, fields: dict[str, Any]) -> None:
    """Step (4) of :func:`record_version`: the published schema, and names where names go."""
    listed = fields["summaries"].get("identifier_columns", [])
    schema = parse_schema(fields["schema_"])
    exposed = unpublished_columns(schema, identifiers=listed if isinstance(listed, list) else [])
    if exposed:
        raise InvalidInput(
            f"the schema reported for {name} is not the published one ({', '.join(exposed)}): "
            "no value of an identifier column may leave the compute plane; upgrade the agent"
        )
    suspects = fields["summaries"].get("suspect_columns", [])
    known = {c.name for c in schema.columns} if isinstance(schema, TableSchema) else set()
    if not isinstance(suspects, list) or any(
        not isinstance(c, str) or c not in known for c in suspects
    ):
        raise InvalidInput(
            f"the summaries reported for {name} list suspected identifiers that are not "
            "columns of its schema: only column names may leave the compute plane; upgrade "
            "the agent"
        )


def edit_schema(
    unit: UnitOfWork,
    *,
    project: Project,
    name: str,
    version: int,
    schema: dict[str, Any],
    user_id: str,
) -> DatasetVersion:
    """Replace a version's schema with a steward's correction (same kind, validated)."""
    row = get_version(unit.session, project=project, name=name, version=version)
    kind = row.schema_.get("kind", "table")
    if schema.get("kind", kind) != kind:
        raise InvalidInput(f"schema.kind must stay {kind!r}")
    checked = parse_schema({**schema, "kind": kind})
    # A correction of the published schema is still the published schema.
    checked.published = bool(row.schema_.get("published", False))
    before = row.schema_
    row.schema_ = checked.model_dump(mode="json")
    row.schema_edited_by = user_id
    unit.record(
        "dataset.schema.edit",
        f"dataset:{project.name}/{name}@{version}",
        {"changed": before != row.schema_},
    )
    return row


def list_datasets(session: Session, *, project: Project) -> list[Dataset]:
    query = select(Dataset).where(Dataset.project_id == project.id)
    return list(session.scalars(query.order_by(Dataset.name)))


def list_versions(session: Session, *, project: Project, name: str) -> list[dict[str, Any]]:
    """Every version of the dataset, oldest first, as the API shows them."""
    dataset = get_dataset(session, project=project, name=name)
    query = select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id)
    return [
        version_view(session, row)
        for row in session.scalars(query.order_by(DatasetVersion.version))
    ]


def summaries(session: Session, *, project: Project) -> list[tuple[str, int | None, int]]:
    """Each dataset's name, latest version number and count of versions."""
    rows = session.execute(
        select(Dataset.name, func.max(DatasetVersion.version), func.count(DatasetVersion.id))
        .outerjoin(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
        .where(Dataset.project_id == project.id)
        .group_by(Dataset.name)
        .order_by(Dataset.name)
    ).all()
    return [(name, latest, count) for name, latest, count in rows]


def version_rows(session: Session, *, project: Project, name: str) -> list[DatasetVersion]:
    """The dataset's versions, newest first."""
    dataset = get_dataset(session, project=project, name=name)
    query = select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id)
    return list(session.scalars(query.order_by(DatasetVersion.version.desc())))
