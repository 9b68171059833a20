"""The model card: how the training job was isolated, and its plots (drawn without a
plotting library, escaped, the same card giving the same bytes)."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from typing import Any

import pytest

from bastion.evaluate.card import build_card, card_plots, render_html


def _card(isolation: str | None) -> dict[str, object]:
    return build_card(
        name="m",
        version={"version": 1, "stage": "none", "evidence": {}, "isolation": isolation},
        evaluations={},
        dataset_summaries=None,
    )


@pytest.mark.parametrize(
    ("isolation", "shown"),
    [
        ("bubblewrap", "sandboxed (bubblewrap: no network, no keys"),
        ("none", "UNSANDBOXED (the agent ran with --no-sandbox)"),
        (None, "isolation not recorded"),
    ],
)
def test_the_card_shows_the_training_jobs_isolation(isolation: str | None, shown: str) -> None:
    card = _card(isolation)
    assert card["training"]["isolation"] == isolation  # type: ignore[index]
    assert shown in render_html(card)
    unsandboxed = [line for line in card["limitations"] if "UNSANDBOXED" in line]  # type: ignore[attr-defined]
    assert len(unsandboxed) == (1 if isolation == "none" else 0)


HOSTILE = "<script>alert(1)</script>"
ROBUSTNESS = {
    "rows": 100,
    "clean_accuracy": 0.9,
    "norm": "linf",
    "steps": 10,
    "restarts": 1,
    "curve": [
        {"attack": "pgd", "eps": 0.05, "robust_accuracy": 0.2},
        {"attack": "fgsm", "eps": 0.05, "robust_accuracy": 0.4},
        {"attack": "pgd", "eps": 0.1, "robust_accuracy": 0.0},
    ],
}
ROC = {"auc": 0.8, "tpr_at_0.1%_fpr": 0.0, "tpr_at_1%_fpr": 0.3}
MEMBERSHIP = {
    **ROC,
    "attack": "loss",
    "rows": 200,
    "members": 100,
    "epsilon": None,
    # A TPR (and an FPR) of 0 has no logarithm: drawn at the plot's floor.
    "loss": {**ROC, "roc": [[0.0, 0.0], [0.001, 0.0], [0.01, 0.3], [1.0, 1.0]]},
    "lira_online": {**ROC, "roc": [[0.0, 0.0], [0.0001, 0.02], [1.0, 1.0]]},
}
EXPLAIN = {
    "top_features": ["age", HOSTILE, "bmi"],
    "permutation_importance": {
        "age": {"mean": 0.2, "std": 0.02},
        HOSTILE: {"mean": 0.1, "std": 0.01},
        "bmi": {"mean": -0.01, "std": 0.005},
    },
}


def _full_card(explain: dict[str, object] | None = None) -> dict[str, Any]:
    return build_card(
        name="m",
        version={"version": 1, "stage": "none", "evidence": {"features": ["age", HOSTILE]}},
        evaluations={
            "robustness": ROBUSTNESS,
            "membership": MEMBERSHIP,
            "explain": EXPLAIN if explain is None else explain,
        },
        dataset_summaries=None,
    )


def test_a_full_card_draws_each_plot_and_an_image_model_its_attribution_map() -> None:
    plots = card_plots(_full_card())
    assert sorted(plots) == ["importance", "membership", "robustness"]
    robustness = plots["robustness"]
    assert robustness.count("<polyline") == 3  # FGSM, PGD, the clean line
    assert "Robustness curve" in robustness and "eps (linf)" in robustness
    assert ">FGSM<" in robustness and ">PGD<" in robustness and ">clean<" in robustness
    roc = plots["membership"]
    assert roc.count("<polyline") == 3 and "loss threshold (AUC 0.800)" in roc
    assert ">0.0001<" in roc and ">0.01<" in roc  # log-log axes with their decades
    assert "Permutation importance" in plots["importance"] and ">bmi<" in plots["importance"]
    image = card_plots(_full_card({"mean_abs_attribution_map": [[0.0, 0.1], [0.2, 0.4]]}))
    assert (
        "Integrated Gradients" in image["importance"]
        and "mean |attribution|" in image["importance"]
    )
    assert all(svg.startswith("<svg xmlns=") for svg in (*plots.values(), *image.values()))


def test_a_zero_tpr_on_the_log_log_roc_is_drawn_at_its_floor() -> None:
    roc = card_plots(_full_card())["membership"]
    points = re.findall(r'<polyline points="([^"]+)"', roc)[0].split()
    (x0, y0), (x1, y1) = (map(float, p.split(",")) for p in points[:2])
    assert y0 == y1 and x0 < x1  # TPR 0 at FPR 0 and at FPR 0.001: both on the floor


def test_a_hostile_feature_name_is_escaped_in_plots_and_page() -> None:
    card = _full_card()
    importance = card_plots(card)["importance"]
    assert HOSTILE not in importance and "&lt;script&gt;alert(1)&lt;/script&gt;" in importance
    page = render_html(card)
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_same_card_gives_the_same_bytes() -> None:
    first, again = render_html(_full_card()), render_html(copy.deepcopy(_full_card()))
    assert first == again and first.count("<svg") == 3
    assert card_plots(_full_card()) == card_plots(_full_card())


def test_rendering_a_card_does_not_import_a_plotting_library() -> None:
    script = (
        "import sys\n"
        "from bastion.evaluate.card import build_card, render_html\n"
        "import bastion.server.web.model_pages\n"
        f"card = build_card(name='m', version={{'version': 1, 'stage': 'none', 'evidence': {{}}}},"
        f" evaluations={{'robustness': {ROBUSTNESS!r}, 'membership': {MEMBERSHIP!r},"
        f" 'explain': {EXPLAIN!r}}}, dataset_summaries=None)\n"
        "assert render_html(card).count('<svg') == 3\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'matplotlib'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"
