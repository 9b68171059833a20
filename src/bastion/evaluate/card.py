"""The model card: what a reviewer needs to judge a model version, built from stored evidence.

:func:`build_card` gathers the version's training evidence, its newest evaluations, the
training data's scan summaries and the signature into one JSON document (with the
scorecard); :func:`render_html` makes a self-contained page of it, the plots inline as
SVG (:mod:`bastion.evaluate.svgplot`), every value escaped.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup

from bastion.evaluate.scorecard import build_scorecard
from bastion.evaluate.svgplot import GREY, Axis, Bar, Scale, Series, bar_plot, heat_map, line_plot
from bastion.templates import render

__all__ = ["CARD_FORMAT", "build_card", "render_html"]

CARD_FORMAT = "bastion-model-card/1"


def _limitations(card: dict[str, Any]) -> list[str]:
    found = []
    training, data = card["training"], card["data"]
    if training.get("isolation") == "none":
        found.append(
            "Trained UNSANDBOXED (an agent started with --no-sandbox): the training job could "
            "read the cluster's keys and reach the network."
        )
    if training.get("epsilon") is None:
        found.append("No differential privacy: the weights carry no formal privacy guarantee.")
    if card["robustness"] is None:
        found.append("Adversarial robustness was not evaluated.")
    else:
        largest = max(point["eps"] for point in card["robustness"]["curve"])
        found.append(
            f"Robustness was measured up to eps {largest} ({card['robustness']['norm']}) "
            "with white-box FGSM/PGD; stronger or adaptive attacks may do better."
        )
    if card["membership"] is None:
        found.append("Membership inference was not audited.")
    elif card["membership"]["rows"] < 2000:
        found.append(
            f"The membership audit scored {card['membership']['rows']} rows: TPR at 0.1% FPR "
            "is coarse at that size."
        )
    if card["fairness"] is None:
        found.append("Fairness was not measured (no sensitive features, or not asked).")
    split = data.get("split") or {}
    if split:
        found.append(
            f"Held-out figures come from {split.get('test_rows')} rows of {data['dataset']}, "
            "drawn from the same distribution as training; they do not predict behaviour "
            "under shift."
        )
    return found


def build_card(
    *,
    name: str,
    version: dict[str, Any],
    evaluations: dict[str, dict[str, Any]],
    dataset_summaries: dict[str, Any] | None,
) -> dict[str, Any]:
    """The card of ``name@version`` (``version``: the registry row as a mapping)."""
    evidence = version["evidence"]
    explain = evaluations.get("explain")
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "model": {
            "name": name,
            "version": version["version"],
            "stage": version["stage"],
            "run_id": version.get("run_id"),
            "created_at": version.get("created_at"),
        },
        "data": {
            "dataset": evidence.get("dataset"),
            "manifest_hash": evidence.get("dataset_manifest_hash"),
            "target": evidence.get("target"),
            "features": evidence.get("features", []),
            "sensitive_features": evidence.get("sensitive_features", []),
            "classes": evidence.get("classes", []),
            "split": evidence.get("split"),
            "scans": dataset_summaries,
            "backdoor_scan": evidence.get("backdoor_scan"),
        },
        "training": {
            "model": evidence.get("model"),
            "train": evidence.get("train"),
            "epsilon": evidence.get("epsilon"),
            "delta": evidence.get("delta"),
            "replaced_modules": evidence.get("replaced_modules", []),
            "initialized_from": evidence.get("initialized_from"),
            "imported_from": evidence.get("imported_from"),
            # bubblewrap, none (unsandboxed), or None (trained before runs recorded it)
            "isolation": version.get("isolation"),
            "code": evidence.get("code"),
            "code_manifest_hash": evidence.get("code_manifest_hash"),
            "data_transform": evidence.get("data_transform"),
            "code_reviews": version.get("code_reviews", []),
        },
        "performance": {
            "train_accuracy": evidence.get("train_accuracy"),
            "test_accuracy": evidence.get("test_accuracy"),
        },
        "federated": _federated(evidence),
        "robustness": evaluations.get("robustness"),
        "membership": evaluations.get("membership"),
        "fairness": evaluations.get("fairness"),
        "memorization": evaluations.get("memorization"),
        "explanations": (
            {
                key: explain[key]
                for key in (
                    "top_features",
                    "permutation_importance",
                    "rows_attributed",
                    "mean_abs_attribution_map",
                )
                if key in explain
            }
            if explain
            else None
        ),
        "signatures": {
            "signed": bool(version.get("signature")),
            "manifest_hash": version.get("manifest_hash"),
            "weights_sha256": evidence.get("weights_sha256"),
        },
    }
    card["limitations"] = _limitations(card)
    card["scorecard"] = build_scorecard(card)
    return card


def _federated(evidence: dict[str, Any]) -> dict[str, Any] | None:
    """A federated model's sites: each one's dataset version, held-out accuracy and fairness
    gaps (measured at the site on its own held-out rows), and how the rounds ran."""
    federated = evidence.get("federated")
    if not isinstance(federated, dict):
        return None
    datasets = evidence.get("datasets") or {}
    accuracy = federated.get("site_accuracy") or {}
    fairness = federated.get("site_fairness") or {}
    sample = federated.get("sample_epsilon") or {}
    return {
        "aggregator": federated.get("aggregator"),
        "rounds": federated.get("rounds"),
        "strategy": federated.get("strategy"),
        "secure_aggregation": federated.get("secure_aggregation"),
        "site_privacy": federated.get("site_privacy"),
        "sample_privacy": bool(sample),
        "sites": [
            {
                "site": site,
                "dataset": datasets.get(site),
                "accuracy": accuracy.get(site),
                **({"sample_epsilon": sample[site]} if site in sample else {}),
                **fairness.get(site, {}),
            }
            for site in federated.get("sites") or []
        ],
    }


# -- HTML ------------------------------------------------------------------------------------

#: The floor of the log-log ROC plot: a TPR or FPR of 0 is drawn there.
_ROC_FLOOR = 1e-4


def _robustness_plot(robustness: dict[str, Any]) -> str:
    clean = robustness["clean_accuracy"]
    series = []
    spaces = [("robust_accuracy", "")]
    if robustness.get("gated_space") == "integer":
        spaces = [("robust_accuracy", " float"), ("robust_accuracy_integer", " integer")]
    for attack in sorted({point["attack"] for point in robustness["curve"]}):
        for key, label in spaces:
            # A curve merged with older evaluations may lack the integer figure at an eps.
            chosen = sorted(
                (p["eps"], p[key])
                for p in robustness["curve"]
                if p["attack"] == attack and key in p
            )
            series.append(Series(attack.upper() + label, [(0.0, clean), *chosen], markers=True))
    largest = max((point["eps"] for point in robustness["curve"]), default=1.0)
    series.append(Series("clean", [(0.0, clean), (largest, clean)], colour=GREY, dashed=True))
    return line_plot(
        title="Robustness curve",
        series=series,
        x=Axis(f"eps ({robustness['norm']})", low=0.0),
        y=Axis("accuracy", low=0.0, high=1.02),
    )


def _roc_plot(membership: dict[str, Any]) -> str:
    series = [
        Series(
            f"{label} (AUC {membership[key]['auc']:.3f})",
            [(fpr, max(tpr, _ROC_FLOOR)) for fpr, tpr in membership[key]["roc"]],
        )
        for key, label in (
            ("loss", "loss threshold"),
            ("lira_online", "LiRA online"),
            ("lira_offline", "LiRA offline"),
        )
        if key in membership
    ]
    chance = Series("chance", [(_ROC_FLOOR, _ROC_FLOOR), (1.0, 1.0)], colour=GREY, dashed=True)
    return line_plot(
        title="Membership inference ROC (log-log)",
        series=[*series, chance],
        x=Axis("false positive rate", Scale.LOG, low=_ROC_FLOOR, high=1.0),
        y=Axis("true positive rate", Scale.LOG, low=_ROC_FLOOR, high=1.05),
    )


def _importance_plot(explanations: dict[str, Any]) -> str:
    importance = explanations["permutation_importance"]
    names = [n for n in list(explanations.get("top_features", []))[:10] if n in importance]
    return bar_plot(
        title="Permutation importance (held-out rows)",
        bars=[Bar(str(n), importance[n]["mean"], importance[n]["std"]) for n in names],
        x_label="accuracy drop when shuffled",
    )


def _attribution_plot(explanations: dict[str, Any]) -> str:
    return heat_map(
        title="Integrated Gradients: where the model looks",
        grid=explanations["mean_abs_attribution_map"],
        colour_label="mean |attribution|",
    )


def card_plots(card: dict[str, Any]) -> dict[str, str]:
    """The card's plots as SVG text, by section: robustness, membership, importance."""
    plots = {}
    if card["robustness"]:
        plots["robustness"] = _robustness_plot(card["robustness"])
    if card["membership"] and "loss" in card["membership"]:
        plots["membership"] = _roc_plot(card["membership"])
    if card["explanations"] and card["explanations"].get("permutation_importance"):
        plots["importance"] = _importance_plot(card["explanations"])
    elif card["explanations"] and card["explanations"].get("mean_abs_attribution_map"):
        plots["importance"] = _attribution_plot(card["explanations"])
    return plots


def render_html(card: dict[str, Any]) -> str:
    """A self-contained HTML page: no script, no external resource."""
    # svgplot escapes every text it draws; its output is inlined as it is.
    plots = {key: Markup(svg) for key, svg in card_plots(card).items()}  # noqa: S704
    return render("bastion.evaluate", "card.html.j2", card=card, plots=plots)
