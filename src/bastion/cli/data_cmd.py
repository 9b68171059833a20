"""``bastion data``: datasets registered, verified, scanned and pseudonymised where they live.

Every verb but ``reference`` and ``list``/``show`` queues a job on the cluster that
holds the data and follows it; the control plane only ever sees metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bastion.cli.context import out, when
from bastion.cli.options import Follow
from bastion.cli.output import Output, OutputFormat, printed
from bastion.cli.remote import client
from bastion.cli.runs_cmd import follow_run
from bastion.client import Client, DatasetVersionOut, RunOut
from bastion.errors import CheckFailed, InvalidInput
from bastion.files import sha256_file

app = typer.Typer(help="Datasets in the compute plane.", no_args_is_help=True)

Project = Annotated[
    str, typer.Option("--project", "-p", envvar="BASTION_PROJECT", help="Project of the dataset.")
]
Ref = Annotated[str, typer.Argument(help="Dataset version, NAME@VERSION (e.g. patients@1).")]


def parse_ref(ref: str) -> tuple[str, int]:
    from bastion.spec import parse_dataset_ref

    try:
        return parse_dataset_ref(ref)
    except Exception as exc:
        raise InvalidInput(str(exc)) from None


def pick_cluster(remote: Client, cluster: str | None) -> str:
    if cluster is not None:
        return cluster
    names = [row.name for row in remote.list_clusters()]
    if len(names) == 1:
        return names[0]
    raise InvalidInput(
        f"name the cluster that holds the file with --cluster ({', '.join(names) or 'none exist'})"
    )


def follow_job(remote: Client, project: str, run: RunOut, *, follow: bool) -> RunOut:
    """Follow a queued dataset job; exit 1 (CheckFailed) unless it succeeded. Returns ``run``
    itself unless ``follow``, else the run as it finished."""
    out.print(f"queued run {run.id} on its cluster ({run.status_reason})")
    if not follow:
        return run
    status = follow_run(remote, project, run.id)
    finished = remote.get_run(project, run.id)
    if status != "succeeded":
        raise CheckFailed(f"run {run.id} {status}: {finished.status_reason}")
    return finished


def version_made_by(remote: Client, project: str, name: str, run_id: str) -> DatasetVersionOut:
    for version in remote.dataset_versions(project, name):
        if version.run_id == run_id:
            return version
    raise CheckFailed(f"run {run_id} succeeded but recorded no version of {name!r}")


def print_version(name: str, version: DatasetVersionOut) -> None:
    out.print(
        f"[bold]{name}@{version.version}[/bold]  {version.row_count} rows  "
        f"on cluster {version.cluster}  manifest {version.manifest_hash}"
    )
    if version.purpose:
        out.print(f"  purpose: {version.purpose}", markup=False)
    for label, value in (
        ("target", version.target),
        ("subject id column", version.subject_id_column),
    ):
        if value:
            out.print(f"  {label}: {value}", markup=False)
    if version.parent_version:
        out.print(f"  made from {name}@{version.parent_version}")
    print_summaries(version.summaries)


def print_summaries(summaries: dict[str, Any]) -> None:
    pii = summaries.get("pii", {}).get("columns", [])
    if pii:
        table = Table("column", "entity", "confidence", "matched rows", title="PII scan")
        for row in pii:
            table.add_row(
                row["column"], row["entity"], f"{row['confidence']:.2f}", str(row["matched"])
            )
        out.print(table)
    elif "pii" in summaries:
        out.print("  PII scan: no identifier columns found")
    poisoning = summaries.get("poisoning", {})
    labels = poisoning.get("label_issues", {})
    if "count" in labels:
        out.print(
            f"  poisoning scan: {labels['count']} suspected label issue(s) "
            f"({labels['rate']:.1%}), {poisoning.get('outliers', 0)} outlier(s), "
            f"{poisoning.get('conflicting_duplicate_groups', 0)} conflicting duplicate group(s)"
        )
        for pair in (labels.get("pairs") or [])[:3]:
            out.print(f"    {pair['count']} labelled {pair['given']} look like {pair['suspected']}")
        if labels.get("triggers"):
            out.print(f"    {labels['triggers']} backdoor trigger patch(es) confirmed")
    if "drift" in summaries:
        drifted = [c["column"] for c in summaries["drift"]["columns"] if c["drifted"]]
        out.print(f"  drift against the previous version: {', '.join(drifted) or 'none'}")
        changed = summaries["drift"].get("transformed")
        if changed:
            out.print(f"  changed on purpose (not drift): {', '.join(changed)}")


@app.command()
def reference(
    kind: Annotated[str, typer.Argument(help="patients, digits, table or notes.")],
    out_path: Annotated[Path, typer.Option("--out", help="File to write (.csv, .parquet, .npz).")],
    rows: Annotated[
        int | None,
        typer.Option(
            min=1, max=10**7, help="Rows (patients, table, notes; digits: the first N images)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Generator seed.")] = 0,
) -> None:
    """Generate a reference workload offline, under a fixed seed."""
    from bastion.data.reference import Reference, write_reference

    try:
        chosen = Reference(kind)
    except ValueError:
        raise InvalidInput(
            f"unknown reference {kind!r}; use patients, digits, table or notes"
        ) from None
    path = write_reference(chosen, out=out_path, rows=rows, seed=seed)
    out.print(f"wrote {chosen.value} reference data to {path} (seed {seed})")
    if chosen is Reference.NOTES:
        out.print(f"identifier spans (the ground truth): {path.with_name(path.stem)}.spans.jsonl")


@app.command()
def register(
    path: Annotated[Path, typer.Argument(help="CSV, Parquet or NPZ file on the cluster's host.")],
    name: Annotated[str, typer.Option("--name", help="Dataset name.")],
    project: Project,
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster", "-c", help="Cluster whose host holds the file (default: the only one)."
        ),
    ] = None,
    target: Annotated[str | None, typer.Option(help="Label column.")] = None,
    purpose: Annotated[str, typer.Option(help="Why this data is processed (GDPR Art. 30).")] = "",
    subject_id_column: Annotated[
        str | None, typer.Option(help="Column identifying the data subject (lineage, erasure).")
    ] = None,
    follow: Follow = True,
) -> None:
    """Register a file as a new encrypted, signed version; its agent scans it first.

    When the file is on this host its size and SHA-256 are sent with the job, and the agent
    refuses a file that has changed by the time it reads it."""
    source = path.expanduser().absolute()
    pinned = source.is_file()
    if not pinned:
        out.print(f"{source} is not on this host: the agent registers the file as it finds it")
    with client() as remote:
        run = remote.register_dataset(
            project,
            name,
            cluster=pick_cluster(remote, cluster),
            source=str(source),
            target=target,
            subject_id_column=subject_id_column,
            purpose=purpose,
            sha256=sha256_file(source) if pinned else None,
            size=source.stat().st_size if pinned else None,
        )
        if follow_job(remote, project, run, follow=follow) is run:
            return
        print_version(name, version_made_by(remote, project, name, run.id))


@app.command("list")
def list_datasets(project: Project, output: Output = OutputFormat.TABLE) -> None:
    """List a project's datasets and their versions."""
    with client() as remote:
        found = [
            (dataset, remote.dataset_versions(project, dataset.name))
            for dataset in remote.list_datasets(project)
        ]
    if printed([{**d.model_dump(by_alias=True), "versions": v} for d, v in found], output):
        return
    table = Table("version", "rows", "cluster", "manifest", "purpose", "created")
    for dataset, versions in found:
        for version in versions:
            table.add_row(
                f"{dataset.name}@{version.version}",
                str(version.row_count),
                version.cluster or "",
                version.manifest_hash[:16],
                version.purpose[:40],
                when(version.created_at),
            )
    out.print(table)


@app.command()
def show(
    ref: Ref,
    project: Project,
    schema: Annotated[bool, typer.Option("--schema", help="Print the schema as JSON.")] = False,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Show a version: rows, cluster, manifest hash, scan summaries (and schema)."""
    name, number = parse_ref(ref)
    with client() as remote:
        version = remote.dataset_version(project, name, number)
    if printed(version, output):
        return
    if schema:
        out.print_json(json.dumps(version.schema_))
        return
    print_version(name, version)


@app.command()
def verify(ref: Ref, project: Project, follow: Follow = True) -> None:
    """Re-hash a version where it is stored and check its signature; exit 1 on any change."""
    name, number = parse_ref(ref)
    with client() as remote:
        run = remote.dataset_job(project, name, number, "verify")
        finished = follow_job(remote, project, run, follow=follow)
    if finished is not run:
        out.print(f"{ref}: verified ({finished.status_reason})", markup=False)


@app.command()
def scan(ref: Ref, project: Project, follow: Follow = True) -> None:
    """Run the PII and poisoning scans again over a stored version."""
    name, number = parse_ref(ref)
    with client() as remote:
        run = remote.dataset_job(project, name, number, "scan")
        finished = follow_job(remote, project, run, follow=follow)
    if finished is not run:
        print_summaries(finished.result or {})


@app.command()
def pseudonymize(
    ref: Ref,
    project: Project,
    columns: Annotated[
        str,
        typer.Option("--columns", help="Comma-separated columns to replace with keyed pseudonyms."),
    ] = "",
    drop: Annotated[str, typer.Option("--drop", help="Comma-separated columns to remove.")] = "",
    age_band: Annotated[
        str, typer.Option("--age-band", help="Date-of-birth columns to turn into age bands.")
    ] = "",
    zip3: Annotated[
        str, typer.Option("--zip3", help="ZIP or address columns to cut to three digits.")
    ] = "",
    follow: Follow = True,
) -> None:
    """Make a new version with identifiers pseudonymised, generalised or dropped.

    With no column named, every column the registration scan found or suspected to identify
    people (but the target) is pseudonymised; the columns left untouched are listed."""

    def split(text: str) -> list[str]:
        return [part.strip() for part in text.split(",") if part.strip()]

    name, number = parse_ref(ref)
    body = {
        "pseudonymize": split(columns),
        "drop": split(drop),
        "generalize": {
            **{column: "age-band" for column in split(age_band)},
            **{column: "zip3" for column in split(zip3)},
        },
    }
    if not (body["pseudonymize"] or body["drop"] or body["generalize"]):
        out.print(
            "no column named: the job pseudonymises every identifier and suspected identifier "
            f"column the scan of {ref} recorded (but the target)",
            markup=False,
        )
    with client() as remote:
        run = remote.dataset_job(project, name, number, "pseudonymize", body)
        if follow_job(remote, project, run, follow=follow) is run:
            return
        version = version_made_by(remote, project, name, run.id)
    print_version(name, version)
    print_treatment(version.summaries.get("pseudonymization"))


@app.command()
def redact(
    ref: Ref,
    project: Project,
    columns: Annotated[
        str, typer.Option("--columns", help="Comma-separated free-text columns to redact.")
    ],
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="placeholder: [PHONE], [EMAIL] ...; pseudonym: the keyed pseudonym of each "
            "identifier, the same one its column would get.",
        ),
    ] = "placeholder",
    follow: Follow = True,
) -> None:
    """Make a new version whose free-text columns have every identifier inside replaced.

    The job finds each identifier's span (e-mails, phones, SSNs, cards, IBANs, record
    numbers, dates of birth, names) and replaces it; the rest of the text stays. The control
    plane sees how many of each were replaced, never the text."""
    if mode not in ("placeholder", "pseudonym"):
        raise InvalidInput(f"--mode {mode!r}: use placeholder or pseudonym")
    named = [part.strip() for part in columns.split(",") if part.strip()]
    if not named:
        raise InvalidInput("--columns: name at least one free-text column")
    name, number = parse_ref(ref)
    with client() as remote:
        body = {"redact": dict.fromkeys(named, mode)}
        run = remote.dataset_job(project, name, number, "pseudonymize", body)
        if follow_job(remote, project, run, follow=follow) is run:
            return
        version = version_made_by(remote, project, name, run.id)
    print_version(name, version)
    for column, counts in (version.summaries.get("redaction") or {}).items():
        shown = ", ".join(f"{n} {entity}" for entity, n in counts.items()) or "no identifier"
        out.print(f"  {column}: replaced {shown}", markup=False)


def print_treatment(plan: Any) -> None:
    """What a pseudonymisation did to each column (as its version records it, names only),
    the columns it left untouched last."""
    if not isinstance(plan, dict):
        return  # made by an agent that did not record it
    generalized = plan.get("generalized", {})
    for label, columns in (
        ("pseudonymised", plan.get("pseudonymized", [])),
        ("generalised", [f"{c} ({how})" for c, how in generalized.items()]),
        ("dropped", plan.get("dropped", [])),
    ):
        if columns:
            out.print(f"  {label}: {', '.join(columns)}", markup=False)
    out.print(f"  left untouched: {', '.join(plan.get('untouched', [])) or 'none'}", markup=False)


@app.command("schema")
def edit_schema(
    ref: Ref,
    project: Project,
    file: Annotated[Path, typer.Option("--file", "-f", help="The corrected schema (JSON).")],
) -> None:
    """Replace a version's schema with a data steward's correction (print it with show --schema)."""
    name, number = parse_ref(ref)
    try:
        schema = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{file}: not a readable JSON schema ({exc})") from None
    with client() as remote:
        remote.edit_dataset_schema(project, name, number, schema)
    out.print(f"{ref}: schema replaced (audited)")


def print_lineage(graph: dict[str, Any], *, indent: str = "") -> None:
    """The graph's edges, one per line, with what each node is."""
    nodes = {node["id"]: node for node in graph["nodes"]}

    def label(key: str) -> str:
        node = nodes[key]
        if node["kind"] == "run":
            return f"run {key[4:16]} ({node['type']}, {node['status']})"
        extra = f", {node['stage']}" if node["kind"] == "model" else ""
        return f"{key}{extra}"

    for edge in graph["edges"]:
        out.print(
            f"{indent}{label(edge['from'])} --{edge['relation']}--> {label(edge['to'])}",
            markup=False,
        )


@app.command()
def lineage(
    ref: Annotated[str, typer.Argument(help="Dataset version, NAME@VERSION.")],
    project: Annotated[
        str,
        typer.Option("--project", "-p", envvar="BASTION_PROJECT", help="Project of the dataset."),
    ],
    output: Output = OutputFormat.TABLE,
) -> None:
    """What a dataset version came from and what was made of it: versions, runs, models."""
    name, number = parse_ref(ref)
    with client() as remote:
        graph = remote.lineage(project, f"dataset:{name}@{number}")
    if not printed(graph, output):
        print_lineage(graph)


@app.command()
def hold(
    ref: Annotated[str, typer.Argument(help="Dataset version, NAME@VERSION.")],
    project: Annotated[
        str,
        typer.Option("--project", "-p", envvar="BASTION_PROJECT", help="Project of the dataset."),
    ],
    reason: Annotated[str, typer.Option(help="Why it must be kept (legal, regulatory).")] = "",
    release: Annotated[bool, typer.Option("--release", help="Lift the hold.")] = False,
) -> None:
    """A retention hold: an erasure then removes the subject but keeps this version's keys."""
    if not release and not reason.strip():
        raise InvalidInput("--reason: say why the version must be kept (or pass --release)")
    name, number = parse_ref(ref)
    with client() as remote:
        remote.set_hold(project, name, number, "" if release else reason)
    out.print(f"{ref}: retention hold {'released' if release else 'set'}", markup=False)
