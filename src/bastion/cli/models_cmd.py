"""``bastion model``: trained model versions, their evidence, and verification where stored."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from bastion.cli.context import out, when
from bastion.cli.data_cmd import follow_job, parse_ref, pick_cluster, print_lineage
from bastion.cli.options import Comment, Follow, comment_or
from bastion.cli.output import Output, OutputFormat, printed
from bastion.cli.remote import client
from bastion.client import ApprovalOut
from bastion.errors import CheckFailed
from bastion.evaluate.scorecard import served_robust_accuracy
from bastion.files import atomic_write_bytes

app = typer.Typer(help="Trained models: versions, evidence, verification.", no_args_is_help=True)

Project = Annotated[
    str, typer.Option("--project", "-p", envvar="BASTION_PROJECT", help="Project of the model.")
]
Ref = Annotated[str, typer.Argument(help="Model version, NAME@VERSION (e.g. readmission@1).")]


def _epsilon(evidence: dict[str, Any]) -> str:
    epsilon = evidence.get("epsilon")
    return "not private" if epsilon is None else f"{epsilon:.3f} (delta {evidence.get('delta')})"


@app.command("list")
def list_models(project: Project, output: Output = OutputFormat.TABLE) -> None:
    """List a project's model versions with their dataset, epsilon and accuracy."""
    with client() as remote:
        found = [
            (model, remote.model_versions(project, model.name))
            for model in remote.list_models(project)
        ]
    if printed([{**m.model_dump(by_alias=True), "versions": v} for m, v in found], output):
        return
    table = Table(
        Column("version", no_wrap=True), "stage", "dataset", "epsilon", "accuracy", "created"
    )
    for model, versions in found:
        for version in versions:
            evidence = version.evidence
            accuracy = evidence.get("train_accuracy")
            table.add_row(
                f"{model.name}@{version.version}",
                version.stage,
                str(evidence.get("dataset", "")),
                _epsilon(evidence),
                "" if accuracy is None else f"{accuracy:.4f}",
                when(version.created_at),
            )
    out.print(table)


@app.command()
def show(ref: Ref, project: Project, output: Output = OutputFormat.TABLE) -> None:
    """Show a version: data it was trained on (with hashes), config, epsilon, signature."""
    name, number = parse_ref(ref)
    with client() as remote:
        version = remote.model_version(project, name, number)
    if printed(version, output):
        return
    evidence = version.evidence
    out.print(f"[bold]{name}@{number}[/bold]  stage {version.stage}  run {version.run_id}")
    out.print(f"  sealed model manifest {version.manifest_hash} (signed by its cluster)")
    out.print(
        f"  trained on {evidence.get('dataset')} "
        f"(manifest {str(evidence.get('dataset_manifest_hash', ''))[:16]})",
        markup=False,
    )
    out.print(f"  model {evidence.get('model')}; train {evidence.get('train')}", markup=False)
    out.print(f"  epsilon {_epsilon(evidence)}")
    if evidence.get("train_accuracy") is not None:
        out.print(f"  train accuracy {evidence['train_accuracy']:.4f}")
    if evidence.get("identifier_overrides"):
        out.print(f"  identifier features (override): {evidence['identifier_overrides']}")
    if "backdoor_scan" in evidence:
        flagged = evidence["backdoor_scan"]["poisoned_classes"]
        out.print(f"  backdoor scan: {'classes ' + str(flagged) if flagged else 'nothing found'}")
    out.print(f"  weights sha256 {evidence.get('weights_sha256')}")
    if evidence.get("test_accuracy") is not None:
        out.print(f"  held-out accuracy {evidence['test_accuracy']:.4f}")
    erased = version.flags.get("trained_on_erased_data")
    if erased:
        out.print(
            f"  [bold red]trained on erased data[/] ({erased['dataset']}, erasure "
            f"{erased['erasure']}): {escape(erased['recommendation'])}"
        )


@app.command()
def card(
    ref: Ref,
    project: Project,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the HTML card to this file.")
    ] = None,
    output: Output = OutputFormat.TABLE,
    as_json: Annotated[bool, typer.Option("--json", hidden=True)] = False,  # older -o json
) -> None:
    """The model card: data, training, epsilon, robustness, privacy, fairness, scorecard."""
    name, number = parse_ref(ref)
    with client() as remote:
        found = remote.model_card(project, name, number)
        page = remote.model_card_html(project, name, number) if html is not None else None
    if not printed(found, OutputFormat.JSON if as_json else output):
        print_card(found)
    if html is not None and page is not None:
        atomic_write_bytes(html, page.encode())
        out.print(f"HTML card written to {html}", markup=False)


def print_card(card: dict[str, Any]) -> None:
    model, training = card["model"], card["training"]
    out.print(f"[bold]{model['name']}@{model['version']}[/bold]  stage {model['stage']}")
    out.print(f"  data {card['data']['dataset']}; epsilon {_epsilon(training)}", markup=False)
    performance = card["performance"]
    for label, key in (("training", "train_accuracy"), ("held-out", "test_accuracy")):
        if performance.get(key) is not None:
            out.print(f"  {label} accuracy {performance[key]:.4f}")
    for site in (card.get("federated") or {}).get("sites", []):
        gap = site.get("demographic_parity_difference")
        out.print(
            f"  site {site['site']} ({site['dataset']}): held-out accuracy "
            + (f"{site['accuracy']:.4f}" if site.get("accuracy") is not None else "not measured")
            + (f", demographic-parity difference {gap:.4f}" if gap is not None else ""),
            markup=False,
        )
    if card["robustness"]:
        worst = min(card["robustness"]["curve"], key=served_robust_accuracy)
        space = ", integer inputs" if card["robustness"].get("gated_space") == "integer" else ""
        out.print(
            f"  robust accuracy {served_robust_accuracy(worst):.4f} at eps {worst['eps']} "
            f"({worst['attack']}{space})"
        )
    if card["membership"]:
        found = card["membership"]
        out.print(
            f"  membership inference ({found['attack']}): AUC {found['auc']:.4f}, "
            f"TPR at 1% FPR {found['tpr_at_1%_fpr']:.4f}"
        )
    if card["fairness"]:
        for label, key in (
            ("demographic-parity", "max_demographic_parity_difference"),
            ("equalized-odds", "max_equalized_odds_difference"),
        ):
            gap = card["fairness"].get(key)
            if gap is not None:
                out.print(f"  largest {label} difference between groups {gap:.4f}")
    if card["explanations"] and card["explanations"].get("top_features"):
        out.print(f"  top features: {', '.join(card['explanations']['top_features'][:5])}")
    table = Table("OWASP ML", "status", "evidence", title="security scorecard")
    colours = {"pass": "green", "fail": "red", "not assessed": "yellow"}
    for item in card["scorecard"]:
        table.add_row(
            f"{item['id']} {item['name']}",
            f"[{colours[item['status']]}]{item['status']}[/]",
            escape(item["evidence"] + (f" (fix: {item['fix']})" if "fix" in item else "")),
        )
    out.print(table)


def gate_table(approval: ApprovalOut) -> Table:
    table = Table("gate", "result", "required", "actual", title=f"policy {approval.policy}")
    for gate in approval.gate_results:
        mark = "[green]pass[/]" if gate["passed"] else "[red]FAIL[/]"
        table.add_row(gate["gate"], mark, escape(gate["required"]), escape(gate["actual"]))
    return table


@app.command()
def promote(
    ref: Ref,
    project: Project,
    to: Annotated[str, typer.Option("--to", help="staging or production.")] = "production",
    policy: Annotated[
        str | None, typer.Option(help="Policy to apply (default: the one named as --to).")
    ] = None,
) -> None:
    """Evaluate every gate of the policy; if all pass, open the approval request."""
    name, number = parse_ref(ref)
    with client() as remote:
        approval = remote.promote_model(project, name, number, to=to, policy=policy)
    out.print(gate_table(approval))
    if approval.status == "failed":
        failed = [g["gate"] for g in approval.gate_results if not g["passed"]]
        raise CheckFailed(f"{ref} cannot go to {to}: gate(s) failed: {', '.join(failed)}")
    if approval.status == "approved":
        out.print(f"{ref} is now in {to} (the policy asks for no approval)", markup=False)
        return
    out.print(
        f"every gate passed; approval requested ({approval.required_approvals} reviewer(s) "
        f"needed): bastion model approve {ref} -p {project} --comment ...",
        markup=False,
    )


@app.command()
def approve(ref: Ref, project: Project, comment: Comment = "") -> None:
    """Approve a pending promotion (never your own version or your own request)."""
    name, number = parse_ref(ref)
    with client() as remote:
        approval = remote.approve_model(project, name, number, comment)
    if approval.status == "approved":
        out.print(f"{ref} approved: now in {approval.target_stage}", markup=False)
    else:
        out.print(
            f"{ref}: your approval is recorded; {approval.required_approvals} distinct "
            "approvals are needed",
            markup=False,
        )


@app.command()
def reject(ref: Ref, project: Project, comment: Comment = "") -> None:
    """Reject a pending promotion; the request closes."""
    name, number = parse_ref(ref)
    with client() as remote:
        remote.reject_model(project, name, number, comment)
    out.print(f"{ref}: promotion rejected", markup=False)


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="Model name.")],
    project: Project,
    to: Annotated[int, typer.Option("--to", help="Version to put back in production.")],
    comment: Comment = "",
    reason: Annotated[str, typer.Option("--reason", hidden=True)] = "",
) -> None:
    """Put back in production a version that was approved for production before."""
    with client() as remote:
        remote.rollback_model(project, name, to_version=to, reason=comment_or(comment, reason))
    out.print(f"{name}@{to} is in production again; the version it replaced is archived")


@app.command()
def archive(ref: Ref, project: Project, reason: Comment = "") -> None:
    """Archive a version (its pending promotion, if any, is withdrawn)."""
    name, number = parse_ref(ref)
    with client() as remote:
        remote.archive_model(project, name, number, reason)
    out.print(f"{ref} archived", markup=False)


@app.command()
def history(
    name: Annotated[str, typer.Argument(help="Model name.")],
    project: Project,
    output: Output = OutputFormat.TABLE,
) -> None:
    """Every stage change of the model's versions (the promotion history)."""
    with client() as remote:
        rows = remote.model_history(project, name)
    if printed(rows, output):
        return
    table = Table("when", "version", "from", "to", "reason", title=f"{name}: stage history")
    for row in rows:
        table.add_row(
            when(row.created_at),
            str(row.version),
            row.from_stage,
            row.to_stage,
            escape(row.reason),
        )
    out.print(table)


@app.command()
def lineage(ref: Ref, project: Project, output: Output = OutputFormat.TABLE) -> None:
    """Where a version came from and what came of it: datasets, runs, models."""
    name, number = parse_ref(ref)
    with client() as remote:
        graph = remote.lineage(project, f"model:{name}@{number}")
    if not printed(graph, output):
        print_lineage(graph)


@app.command()
def verify(ref: Ref, project: Project, follow: Follow = True) -> None:
    """Check the sealed model where it is stored (signature, every file); exit 1 on any change."""
    name, number = parse_ref(ref)
    with client() as remote:
        run = remote.verify_model(project, name, number)
        finished = follow_job(remote, project, run, follow=follow)
    if finished is not run:
        out.print(f"{ref}: verified ({finished.status_reason})", markup=False)


@app.command("export")
def export_model(
    ref: Ref,
    project: Project,
    to_cluster: Annotated[str, typer.Option("--to-cluster", help="The cluster it is for.")],
    follow: Follow = True,
) -> None:
    """Re-encrypt a model to another cluster's public key; prints where the file is written."""
    name, number = parse_ref(ref)
    with client() as remote:
        run = remote.export_model(project, name, number, to_cluster=to_cluster)
        finished = follow_job(remote, project, run, follow=follow)
    if finished is not run:
        out.print(finished.status_reason, markup=False)
        out.print(f"copy that file to {to_cluster}'s host, then: bastion model import FILE ...")


@app.command("import")
def import_model(
    path: Annotated[Path, typer.Argument(help="Transfer file on the receiving cluster's host.")],
    name: Annotated[str, typer.Option("--name", help="Model name to register it under.")],
    project: Project,
    cluster: Annotated[
        str | None,
        typer.Option("--cluster", "-c", help="Receiving cluster (default: the only one)."),
    ] = None,
    follow: Follow = True,
) -> None:
    """Verify a transfer file (sender's signature, every file) and register the model here."""
    with client() as remote:
        run = remote.import_model(
            project,
            name,
            cluster=pick_cluster(remote, cluster),
            source=str(path.expanduser().absolute()),
        )
        finished = follow_job(remote, project, run, follow=follow)
        if finished is run:
            return
        versions = [v for v in remote.model_versions(project, name) if v.run_id == run.id]
    for version in versions:
        origin = version.evidence.get("imported_from", {})
        out.print(
            f"imported {name}@{version.version} from cluster {origin.get('cluster')} "
            f"({origin.get('name')}@{origin.get('version')}); sealed and signed here"
        )
