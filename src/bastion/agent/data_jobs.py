"""The dataset jobs, as they run in a job process (no keys, plaintext in a private workdir).

``ingest`` reads the file to register (a table a batch at a time, into its canonical file,
so memory does not grow with its rows), ``pseudonymize`` transforms a staged version;
both describe the result (schema, scans) and leave it in ``outputs/`` for the agent
to seal, with its exact schema beside it. ``verify`` and ``scan`` report on a version the
agent has already verified and staged in ``inputs/``. What they report is aggregates and
the published schema (:mod:`bastion.data.publish`): never a value.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.agent.staging import INPUTS, OUTPUTS, REQUEST
from bastion.config import Settings
from bastion.data.canonical import SourceRead
from bastion.data.checks import category_rows, validate_images, validate_table
from bastion.data.ingest import (
    Loaded,
    TableFile,
    describe,
    ingest_source,
    read_canonical,
    write_canonical,
)
from bastion.data.layout import DATA_FILES, SCHEMA_FILE
from bastion.data.pseudonymize import (
    Generalization,
    plan_columns,
    pseudonym,
    pseudonymize_frame,
)
from bastion.data.publish import KeptSchema, effective_schema, publish_schema
from bastion.data.redact import Redaction, redact_frame
from bastion.data.schema import ImageSchema, TableSchema, Violation, parse_schema
from bastion.errors import ConfigurationError, IntegrityError, InvalidInput
from bastion.files import atomic_write_bytes, ensure_private_dir, sha256_file
from bastion.security.keys import prf_from_capability
from bastion.spec import EraseJob, IngestJob, PseudonymizeJob, ScanJob, VerifyJob

if TYPE_CHECKING:
    from bastion.agent.job import JobContext

__all__ = [
    "run_ingest",
    "run_pseudonymize",
    "run_scan",
    "run_verify",
    "schema_violations",
    "staged_input",
    "staged_schema",
]


def _staged_file(workdir: Path, role: str) -> tuple[Path, dict[str, Any]] | None:
    """The data file of the version the agent staged as ``role``, and its record."""
    folder = workdir / INPUTS / role
    info_file = folder / "version.json"
    if not info_file.is_file():
        return None
    info = json.loads(info_file.read_text())
    return folder / DATA_FILES[info["kind"]], info


def _staged(workdir: Path, role: str) -> tuple[Loaded, dict[str, Any]] | None:
    staged = _staged_file(workdir, role)
    return None if staged is None else (read_canonical(staged[0]), staged[1])


def staged_input(workdir: Path) -> tuple[Loaded, dict[str, Any]]:
    staged = _staged(workdir, "input")
    if staged is None:
        raise ConfigurationError("the agent staged no input dataset for this job")
    return staged


def staged_schema(workdir: Path, info: dict[str, Any]) -> TableSchema | ImageSchema:
    """The schema the staged input is held to: the exact schema sealed with it, with the
    edits a data steward made to the published one (the control plane's, in ``info``)."""
    kept_file = workdir / INPUTS / "input" / SCHEMA_FILE
    if not kept_file.is_file():
        raise IntegrityError(
            f"{info['name']}@{info['version']} was sealed without its exact schema (by an "
            "older agent); register its file again"
        )
    kept = KeptSchema.model_validate_json(kept_file.read_bytes())
    return effective_schema(
        exact=kept.exact, published=kept.published, current=parse_schema(info["schema"])
    )


def schema_violations(data: Loaded, schema: TableSchema | ImageSchema) -> list[Violation]:
    """Every rule of ``schema`` the data breaks (rules and counts, never values)."""
    if isinstance(schema, ImageSchema):
        images, labels = data.arrays()
        return validate_images(images, schema, labels)
    return validate_table(data.table(), schema)


def _top_pair(labels: dict[str, Any]) -> str:
    """The class pair with most suspected flips, and confirmed backdoor triggers."""
    text = ""
    if pairs := labels.get("pairs"):
        top = pairs[0]
        text = f"; most: {top['count']} labelled {top['given']} look like {top['suspected']}"
    if labels.get("triggers"):
        text += f"; {labels['triggers']} backdoor trigger(s)"
    return text


def _log_description(context: JobContext, described: dict[str, Any]) -> None:
    summaries = described["summaries"]
    context.log(f"{described['rows']} rows ({described['kind']})")
    pii = summaries.get("pii", {}).get("columns", [])
    if pii:
        found = ", ".join(f"{c['column']}: {c['entity']}" for c in pii)
        context.log(f"PII scan: {len(pii)} identifier column(s) - {found}")
    elif described["kind"] == "table":
        context.log("PII scan: no identifier columns found")
    poisoning = summaries.get("poisoning", {})
    labels = poisoning.get("label_issues", {})
    if "count" in labels:
        context.log(
            f"poisoning scan: {labels['count']} suspected label issue(s) in "
            f"{labels['rows_scanned']} rows, {poisoning.get('outliers', 0)} outlier(s)"
            + _top_pair(labels)
        )
    if "drift" in summaries:
        context.log(
            f"drift against the previous version: {summaries['drift']['drifted']} column(s)"
        )


def _leave_for_sealing(
    workdir: Path, *, dataset: str, data: Loaded | TableFile, described: dict[str, Any]
) -> None:
    """Leave the data (a :class:`TableFile` is in ``outputs/`` already), its schema and the
    request to seal them."""
    outputs = workdir / OUTPUTS
    ensure_private_dir(outputs)
    if isinstance(data, Loaded):
        write_canonical(data, outputs)
    # The exact schema is sealed with the data; the control plane gets the published one,
    # decided only now that the identifier columns are final.
    exact = parse_schema(described["schema"])
    rows_per_category: dict[str, dict[str, int]] = {}
    if isinstance(data, TableFile):
        rows_per_category = data.profile().category_rows
    elif isinstance(exact, TableSchema):
        rows_per_category = category_rows(data.table(), exact)
    published = publish_schema(
        exact,
        identifiers=described.get("identifier_columns", []),
        category_rows=rows_per_category,
    )
    kept = KeptSchema(exact=exact, published=published)
    atomic_write_bytes(outputs / SCHEMA_FILE, kept.model_dump_json().encode())
    request = {
        "dataset": dataset,
        "kind": described["kind"],
        "rows": described["rows"],
        "schema": published.model_dump(mode="json"),
        "summaries": {
            **described["summaries"],
            "identifier_columns": described.get("identifier_columns", []),
        },
    }
    atomic_write_bytes(outputs / REQUEST, json.dumps(request).encode())


def _unchanged(source: Path, job: IngestJob, read: SourceRead | None = None) -> None:
    """The file is still the one submitted (when the submitter could pin it): the bytes the
    job read (``read``: their count and SHA-256, taken as they were read), else the file as
    it is now."""
    if read is None and not source.is_file():
        return
    size = read.size if read is not None else source.stat().st_size
    if job.size is not None and size != job.size:
        raise IntegrityError(
            f"{source}: changed since it was submitted ({job.size} bytes then, "
            f"{size} now); submit it again if the change is intended"
        )
    if job.sha256 is None:
        return
    if (read.sha256 if read is not None else sha256_file(source)) != job.sha256:
        raise IntegrityError(
            f"{source}: changed since it was submitted (its SHA-256 differs); submit it again "
            "if the change is intended"
        )


def run_ingest(context: JobContext, job: IngestJob) -> None:
    """Read the file into its canonical form, describe it and leave it for sealing."""
    source = Path(job.source)
    context.log(f"reading {source.name}")
    ingested = ingest_source(source, ensure_private_dir(context.workdir / OUTPUTS))
    _unchanged(source, job, ingested.read)  # what was read, byte for byte, was submitted
    baseline: Loaded | TableFile | None = None
    staged = _staged_file(context.workdir, "baseline")
    if staged is not None:  # a previous table stays in its file, read a batch at a time
        path, info = staged
        baseline = TableFile(path) if info["kind"] == "table" else read_canonical(path)
        context.log(f"comparing with the previous version {info['name']}@{info['version']}")
    described = describe(
        ingested.data,
        target=job.target,
        subject_id_column=job.subject_id_column,
        baseline=baseline,
    )
    _log_description(context, described)
    _leave_for_sealing(
        context.workdir, dataset=job.dataset, data=ingested.data, described=described
    )


def _findings(info: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The staged version's scan findings, suspected ones first."""
    pii = info.get("pii") or {}
    for key in ("suspects", "columns"):
        yield from pii.get(key, [])


def _free_text(info: dict[str, Any]) -> set[str]:
    """Columns whose identifiers the staged version's scan found inside free text."""
    return {str(finding["column"]) for finding in _findings(info) if finding.get("free_text")}


def _spelled_entities(info: dict[str, Any]) -> dict[str, str]:
    """Column -> entity of the staged version's scan (confident over suspected), for the
    columns that hold one value each: free text is pseudonymised as written. The subject-id
    column keeps its spelling: an erasure finds its rows by the pseudonym of the id as the
    request writes it (:func:`run_erase`)."""
    found = {
        str(finding["column"]): str(finding["entity"])
        for finding in _findings(info)
        if not finding.get("free_text")
    }
    found.pop(str(info.get("subject_id_column")), None)
    return found


def run_pseudonymize(context: JobContext, job: PseudonymizeJob) -> None:
    """Transform the staged version with the pseudonym key the agent handed over.

    With no column named, the job decides (:func:`~bastion.data.pseudonymize.plan_columns`)
    from the staged version's record, which its registration scan wrote: every identifier
    and suspected identifier column but the target is pseudonymised. The decision is
    logged and recorded, column names only, in the new version's summaries
    (``pseudonymization``: what was treated and what was left untouched).
    """
    settings = Settings()
    if settings.pseudonym_key is None:
        raise ConfigurationError("the agent handed this job no pseudonym key")
    prf = prf_from_capability(settings.pseudonym_key.get_secret_value())
    data, info = staged_input(context.workdir)
    frame = data.table()
    target = info.get("target")
    subject = info.get("subject_id_column")
    identifiers = set(info.get("identifier_columns", []))
    suspects = set(info.get("suspect_columns", []))
    plan = plan_columns(
        [str(c) for c in frame.columns],
        pseudonymize=job.pseudonymize,
        generalize={c: Generalization(how) for c, how in job.generalize.items()},
        drop=job.drop,
        redact=job.redact,
        free_text=_free_text(info),
        identifiers=identifiers,
        suspects=suspects,
        target=target,
        dataset=job.dataset,
    )
    transformed = frame
    if plan.pseudonymize or plan.generalize or plan.drop:
        transformed = pseudonymize_frame(
            frame,
            prf=prf,
            pseudonymize=plan.pseudonymize,
            generalize=plan.generalize,
            drop=plan.drop,
            entities=_spelled_entities(info),
        )
    redaction: dict[str, dict[str, int]] = {}
    if plan.redact:  # identifiers inside free text: placeholders or the same keyed pseudonyms
        modes = {column: Redaction(how) for column, how in plan.redact.items()}
        transformed, redaction = redact_frame(transformed, modes, prf=prf)
    for line in plan.lines():
        context.log(line)
    for column, counts in redaction.items():
        found = ", ".join(f"{n} {entity}" for entity, n in counts.items()) or "no identifier"
        context.log(f"{column}: replaced {found}")
    result = Loaded(kind="table", frame=transformed)
    described = describe(
        result,
        target=target if target in transformed.columns else None,
        subject_id_column=subject if subject in transformed.columns else None,
        baseline=data,
        transformed=[*plan.pseudonymize, *plan.generalize, *plan.redact],
    )
    # A keyed pseudonym still identifies a person to whoever holds the key (GDPR: personal
    # data), and so do the input's identifier columns that were kept as they were.
    placeholders = {c for c, how in plan.redact.items() if how == Redaction.PLACEHOLDER}
    kept = identifiers - set(plan.generalize) - set(plan.drop) - placeholders
    described["identifier_columns"] = sorted(
        set(described.get("identifier_columns", [])) | set(plan.pseudonymize) | kept
    )
    # A suspect left untouched stays one, whatever the scan of the result says.
    summaries = described["summaries"]
    summaries["suspect_columns"] = sorted(
        (set(summaries.get("suspect_columns", [])) | (suspects & set(plan.untouched)))
        - set(described["identifier_columns"])
    )
    summaries["pseudonymization"] = plan.summary()
    if redaction:
        summaries["redaction"] = redaction  # counts per entity, never text
    _log_description(context, described)
    name = job.dataset.split("@")[0]
    _leave_for_sealing(context.workdir, dataset=name, data=result, described=described)


def run_verify(context: JobContext, job: VerifyJob) -> str:
    """The agent verified hashes and signature before staging; check the schema too."""
    data, info = staged_input(context.workdir)
    violations = schema_violations(data, staged_schema(context.workdir, info))
    for violation in violations:
        context.log(f"schema: {violation.column}: {violation.rule} ({violation.rows} rows)")
    context.result(
        {
            "verified": True,
            "manifest_hash": info["manifest_hash"],
            "rows": data.rows,
            "schema_violations": [v.model_dump() for v in violations],
        }
    )
    return (
        f"{job.dataset}: manifest {info['manifest_hash'][:12]}, signature and content verified; "
        f"{len(violations)} schema violation(s)"
    )


def run_scan(context: JobContext, job: ScanJob) -> str:
    data, info = staged_input(context.workdir)
    described = describe(
        data, target=info.get("target"), subject_id_column=info.get("subject_id_column")
    )
    _log_description(context, described)
    context.result(
        {**described["summaries"], "identifier_columns": described.get("identifier_columns", [])}
    )
    return f"{job.dataset}: scanned {described['rows']} rows"


def run_erase(context: JobContext, job: EraseJob) -> str | None:
    """Remove one subject's rows: a new version without them, or nothing when none match.

    The subject id (handed over by the agent, which opened it with the cluster's key)
    matches the subject column as written or as its keyed pseudonym, so raw and
    pseudonymised versions are both searched. Only the count of rows leaves the job.
    """
    settings = Settings()
    if settings.erase_subject is None or settings.pseudonym_key is None:
        raise ConfigurationError("the agent handed this job no subject or pseudonym key")
    subject = settings.erase_subject.get_secret_value().strip()
    prf = prf_from_capability(settings.pseudonym_key.get_secret_value())
    data, info = staged_input(context.workdir)
    column = info.get("subject_id_column")
    frame = data.table() if data.kind == "table" else None
    if frame is None or not column or column not in frame.columns:
        raise InvalidInput(f"{job.dataset} has no subject-id column to search")
    values = frame[column].astype("string").str.strip()
    matches = (values == subject) | (values == pseudonym(subject, prf))
    removed = int(matches.fillna(False).sum())
    context.result({"erasure": job.erasure, "rows_found": removed})
    if job.locate:
        return f"{job.dataset}: {removed} row(s) of the subject"
    if removed == 0:
        return f"{job.dataset}: the subject is not in this version; nothing to erase"
    context.log(f"{removed} row(s) of the subject found; sealing {job.dataset} without them")
    kept = Loaded(
        kind="table", frame=frame.loc[~matches.fillna(False).to_numpy()].reset_index(drop=True)
    )
    target = info.get("target")
    described = describe(
        kept,
        target=target if target in frame.columns else None,
        subject_id_column=column,
        baseline=data,
    )
    described["identifier_columns"] = sorted(
        set(described.get("identifier_columns", [])) | set(info.get("identifier_columns", []))
    )
    _leave_for_sealing(
        context.workdir, dataset=job.dataset.split("@")[0], data=kept, described=described
    )
    return None
