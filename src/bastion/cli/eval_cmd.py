"""``bastion eval``: attack and audit a registered model version where it lives.

Each verb queues an ``evaluate`` run on the cluster that holds the version and its
training data, follows it, and prints the summary stored with the version.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from bastion.cli.context import out
from bastion.cli.data_cmd import follow_job, parse_ref
from bastion.cli.options import Follow
from bastion.cli.remote import client
from bastion.errors import InvalidInput

app = typer.Typer(
    help="Evaluate a model version: robustness, privacy (membership inference), fairness, "
    "explanations.",
    no_args_is_help=True,
)

Project = Annotated[
    str, typer.Option("--project", "-p", envvar="BASTION_PROJECT", help="Project of the model.")
]
Ref = Annotated[str, typer.Argument(help="Model version, NAME@VERSION (e.g. readmission@1).")]


def _numbers(text: str, option: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidInput(f"{option}: a comma-separated list of numbers, got {text!r}") from None


def _evaluate(project: str, ref: str, block: dict[str, Any], *, follow: bool) -> Any:
    """Queue, follow, and return the newest stored summary of the block's kind."""
    name, number = parse_ref(ref)
    with client() as remote:
        run = remote.evaluate_model(project, name, number, block)
        finished = follow_job(remote, project, run, follow=follow)
        if finished is run:
            return None
        rows = [r for r in remote.model_evaluations(project, name, number) if r.run_id == run.id]
    return rows[-1].summary if rows else None


@app.command()
def robustness(
    ref: Ref,
    project: Project,
    eps: Annotated[str, typer.Option(help="Budgets, comma-separated.")] = "0.01,0.05,0.1",
    attack: Annotated[list[str] | None, typer.Option(help="fgsm and/or pgd (repeat).")] = None,
    norm: Annotated[str, typer.Option(help="linf or l2.")] = "linf",
    steps: Annotated[int, typer.Option(help="PGD steps.")] = 20,
    restarts: Annotated[int, typer.Option(help="PGD random restarts.")] = 1,
    max_rows: Annotated[int, typer.Option(help="Held-out rows attacked.")] = 1000,
    follow: Follow = True,
) -> None:
    """FGSM/PGD robust accuracy on held-out rows, for each eps (a robustness curve)."""
    block = {
        "robustness": {
            "eps": _numbers(eps, "--eps"),
            "attacks": attack or ["fgsm", "pgd"],
            "norm": norm,
            "steps": steps,
            "restarts": restarts,
            "max_rows": max_rows,
        }
    }
    summary = _evaluate(project, ref, block, follow=follow)
    if summary is None:
        return
    out.print(f"clean accuracy {summary['clean_accuracy']:.4f} on {summary['rows']} rows")
    integer = summary.get("gated_space") == "integer"
    columns = ["attack", "eps", "robust accuracy" + (" (float)" if integer else "")]
    table = Table(
        *columns, *(["integer inputs (gated)"] if integer else []), title=f"robustness of {ref}"
    )
    for point in summary["curve"]:
        cells = [point["attack"], str(point["eps"]), f"{point['robust_accuracy']:.4f}"]
        if integer:
            integer_figure = point.get("robust_accuracy_integer")
            cells.append("-" if integer_figure is None else f"{integer_figure:.4f}")
        table.add_row(*cells)
    out.print(table)


@app.command()
def privacy(
    ref: Ref,
    project: Project,
    attack: Annotated[str, typer.Option(help="lira (shadow models) or loss.")] = "lira",
    shadow_models: Annotated[int, typer.Option(help="LiRA shadow models.")] = 16,
    max_rows: Annotated[int, typer.Option(help="Rows scored (half members).")] = 4000,
    follow: Follow = True,
) -> None:
    """Membership inference: loss threshold and LiRA (online, offline) with shadow models."""
    block = {
        "membership_inference": {
            "attack": attack,
            "shadow_models": shadow_models,
            "max_rows": max_rows,
        }
    }
    summary = _evaluate(project, ref, block, follow=follow)
    if summary is None:
        return
    epsilon = summary.get("epsilon")
    out.print(
        f"{summary['rows']} rows scored ({summary['members']} members); model epsilon "
        f"{'none (no DP)' if epsilon is None else f'{epsilon:.3f}'}"
    )
    table = Table("attack", "AUC", "TPR at 0.1% FPR", "TPR at 1% FPR", title=f"privacy of {ref}")
    for key in ("loss", "lira_online", "lira_offline"):
        if key in summary:
            found = summary[key]
            table.add_row(
                key.replace("_", " "),
                f"{found['auc']:.4f}",
                f"{found['tpr_at_0.1%_fpr']:.4f}",
                f"{found['tpr_at_1%_fpr']:.4f}",
            )
    out.print(table)


@app.command()
def fairness(
    ref: Ref,
    project: Project,
    min_group_size: Annotated[int, typer.Option(help="Smaller groups are pooled.")] = 10,
    follow: Follow = True,
) -> None:
    """Per-group accuracy, selection rate, TPR and FPR for each sensitive feature."""
    block = {"fairness": {"min_group_size": min_group_size}}
    summary = _evaluate(project, ref, block, follow=follow)
    if summary is None:
        return
    for feature, found in summary["features"].items():
        table = Table(
            "group", "rows", "accuracy", "selection rate", "TPR", "FPR", title=f"{ref} by {feature}"
        )
        for row in found["groups"]:
            table.add_row(
                row["group"],
                str(int(row["count"])),
                *(_fmt(row.get(k)) for k in ("accuracy", "selection_rate")),
                *(_fmt(row.get(k)) for k in ("true_positive_rate", "false_positive_rate")),
            )
        out.print(table)
        out.print(
            f"demographic-parity difference {_fmt(found.get('demographic_parity_difference'))}, "
            f"equalized-odds difference {_fmt(found.get('equalized_odds_difference'))}"
        )


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@app.command()
def explain(
    ref: Ref,
    project: Project,
    rows: Annotated[int, typer.Option(help="Rows attributed with Integrated Gradients.")] = 64,
    repeats: Annotated[int, typer.Option(help="Permutation repeats.")] = 5,
    follow: Follow = True,
) -> None:
    """Global permutation importance and Integrated Gradients summaries (Captum)."""
    block = {"explain": {"rows": rows, "repeats": repeats}}
    summary = _evaluate(project, ref, block, follow=follow)
    if summary is None:
        return
    if "permutation_importance" not in summary:
        out.print(f"{summary['rows_attributed']} images attributed; maps stored with {ref}")
        return
    table = Table("feature", "importance", "mean |IG|", title=f"what drives {ref}")
    importance, ig = summary["permutation_importance"], summary["integrated_gradients"]
    for name in summary["top_features"]:
        table.add_row(name, f"{importance[name]['mean']:.4f}", f"{ig[name]['mean_abs']:.4f}")
    out.print(table)
