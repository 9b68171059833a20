"""The federated run spec, the control plane's checks across sites, the statistics round's
arithmetic and the card's federated section: without Flower."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bastion.agent.federated_job import shared_preprocessing, with_moments
from bastion.errors import InvalidSpec
from bastion.evaluate.card import build_card, render_html
from bastion.federated.local import moments
from bastion.federated.plan import FederatedPlan
from bastion.server.services.federated import same_columns
from bastion.spec import FederatedJob, parse_spec


def _spec(**federated: Any) -> dict[str, Any]:
    return {
        "name": "fed",
        "project": "p",
        "federated": {"clusters": ["a", "b", "c"], "aggregator": "a", **federated},
        "datasets": {"a": "x@1", "b": "y@1", "c": "z@2"},
        "model": {"builtin": "mlp", "hidden": [8]},
        "train": {"epochs": 1},
    }


def test_the_federated_block_becomes_a_job_on_the_aggregator() -> None:
    spec = parse_spec(_spec(rounds=4, strategy="fedprox", min_clients=2))
    assert spec.cluster == "a"
    assert isinstance(spec.job, FederatedJob)
    assert (spec.job.rounds, spec.job.strategy, spec.job.min_clients) == (4, "fedprox", 2)
    assert spec.job.model_name == "fed" and spec.job.secure_aggregation is True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"federated": {"clusters": ["a", "b"], "aggregator": "z"}}, "aggregator 'z' is not"),
        ({"federated": {"clusters": ["a", "a"], "aggregator": "a"}}, "named twice"),
        ({"datasets": {"a": "x@1", "b": "y@1"}}, "no dataset for cluster"),
        ({"datasets": {"a": "x@1", "b": "y@1", "c": "z@1", "d": "w@1"}}, "d is not one of"),
        ({"cluster": "b"}, "submitted to its aggregator"),
        ({"train": {"holdout": 0}}, "held-out rows"),
        ({"train": {"adversarial": {"eps": 0.1}}}, "train.adversarial: not available"),
        (
            {"federated": {"clusters": ["a", "b"]}, "datasets": {"a": "x@1", "b": "y@1"}},
            "secure_aggregation needs at least 3 clusters",
        ),
    ],
)
def test_a_bad_federated_spec_is_refused_naming_why(change: dict[str, Any], message: str) -> None:
    body = _spec()
    for key, value in change.items():
        body[key] = value if key != "federated" else {**body["federated"], **value}
    with pytest.raises(InvalidSpec, match=message):
        parse_spec(body)


def test_min_clients_cannot_exceed_the_sites() -> None:
    with pytest.raises(InvalidSpec, match="min_clients 4 exceeds the 3 clusters"):
        parse_spec(_spec(min_clients=4))


def _version(columns: dict[str, str], target: str = "y") -> Any:
    listed = [{"name": n, "type": t} for n, t in columns.items()]
    return SimpleNamespace(schema_={"kind": "table", "columns": listed}, target=target)


def _job() -> FederatedJob:
    spec = parse_spec(_spec())
    assert isinstance(spec.job, FederatedJob)
    return spec.job


def test_sites_with_the_same_columns_pass() -> None:
    columns = {"age": "integer", "y": "integer"}
    same_columns(_job(), {c: _version(columns) for c in "abc"})


@pytest.mark.parametrize(
    ("site_b", "message"),
    [
        ({"y": "integer"}, "column 'age' of x@1 \\(site a\\) is missing from y@1 \\(site b\\)"),
        ({"age": "string", "y": "integer"}, "column 'age' is integer at site a but string"),
        ({"age": "integer", "y": "integer", "extra": "float"}, "column 'extra' of y@1"),
    ],
)
def test_a_column_mismatch_is_refused_naming_the_column(
    site_b: dict[str, str], message: str
) -> None:
    versions = {c: _version({"age": "integer", "y": "integer"}) for c in "ac"}
    versions["b"] = _version(site_b)
    with pytest.raises(InvalidSpec, match=message):
        same_columns(_job(), versions)


def test_different_targets_need_the_spec_to_name_one() -> None:
    columns = {"age": "integer", "y": "integer", "z": "integer"}
    versions = {"a": _version(columns), "b": _version(columns, "z"), "c": _version(columns)}
    with pytest.raises(InvalidSpec, match="different targets"):
        same_columns(_job(), versions)


def test_the_statistics_round_gives_the_pooled_means_and_deviations(tmp_path: Path) -> None:
    """Each site's scaled moments, averaged by rows (what FedAvg computes), give exactly the
    means and deviations of the pooled rows; categories are the union of the published ones."""
    rng = np.random.default_rng(0)
    frames = [
        pd.DataFrame(
            {
                "age": rng.normal(40 + 10 * i, 5 + i, size=n),
                "dose": rng.uniform(0, 100 * (i + 1), size=n),
                "sex": rng.choice(["F", "M"], size=n),
                "y": rng.integers(0, 2, size=n),
            }
        )
        for i, n in enumerate((50, 80, 30))
    ]
    published = {
        f"s{i}": {
            "schema": {
                "columns": [
                    {"name": "age", "minimum": 0.0, "maximum": 120.0},
                    {"name": "dose", "minimum": 0.0, "maximum": 400.0},
                    {"name": "sex", "categories": ["F", "M", "X"] if i == 2 else ["F", "M"]},
                    {"name": "y", "minimum": 0, "maximum": 1},
                ]
            }
        }
        for i in range(3)
    }
    prep, bounds, _ = shared_preprocessing(
        frames[0], target="y", features=["age", "dose", "sex"], sites=published
    )
    assert bounds == {"age": (0.0, 120.0), "dose": (0.0, 400.0)}
    assert prep.categorical == {"sex": ["F", "M", "X"]} and prep.classes == ["0", "1"]
    plan = FederatedPlan(
        stage="stats",
        bounds=bounds,
        model={"builtin": "mlp"},
        train={},
        input_shape=(5,),
        classes=2,
        sites=3,
        rounds=1,
        min_clients=3,
        max_rows=80,
        output=str(tmp_path),
    )
    answers = []
    for number, frame in enumerate(frames):
        path = tmp_path / f"s{number}.parquet"
        frame.to_parquet(path)
        answers.append(moments(plan, path))
    total = sum(rows for _, rows in answers)
    averaged = [sum(a[k] * rows for a, rows in answers) / total for k in range(2)]
    moments_file = {"columns": list(bounds), "mean": averaged[0], "mean_square": averaged[1]}
    shared = with_moments(prep, bounds, moments_file)
    pooled = pd.concat(frames)[["age", "dose"]].to_numpy()
    assert np.allclose(shared.mean, pooled.mean(axis=0), rtol=1e-9)
    assert np.allclose(shared.std, pooled.std(axis=0), rtol=1e-9)


def test_a_federated_card_shows_each_site() -> None:
    evidence = {
        "datasets": {"a": "x@1", "b": "y@1"},
        "federated": {
            "aggregator": "a",
            "sites": ["a", "b"],
            "rounds": 3,
            "strategy": "fedavg",
            "secure_aggregation": True,
            "site_privacy": None,
            "site_accuracy": {"a": 0.9, "b": 0.8},
            "site_fairness": {"a": {"demographic_parity_difference": 0.1}},
        },
    }
    version = {"version": 1, "stage": "staging", "evidence": evidence}
    card = build_card(name="m", version=version, evaluations={}, dataset_summaries=None)
    assert card["federated"]["sites"] == [
        {"site": "a", "dataset": "x@1", "accuracy": 0.9, "demographic_parity_difference": 0.1},
        {"site": "b", "dataset": "y@1", "accuracy": 0.8},
    ]
    page = render_html(card)
    assert "<h2>Federated training</h2>" in page and "under SecAgg+" in page
    assert "<td>y@1</td><td>0.8</td><td>not measured</td>" in page
    assert "Sample-level epsilon" not in page
    # Sample-level DP-SGD at the sites: each site's epsilon, in a column of its own.
    evidence["federated"]["sample_epsilon"] = {"a": 1.96, "b": 1.91}  # type: ignore[index]
    card = build_card(name="m", version=version, evaluations={}, dataset_summaries=None)
    assert card["federated"]["sites"][1] == {
        "site": "b",
        "dataset": "y@1",
        "accuracy": 0.8,
        "sample_epsilon": 1.91,
    }
    page = render_html(card)
    assert "sample-level DP-SGD at every site" in page
    assert "<td>y@1</td><td>0.8</td><td>not measured</td><td>not measured</td><td>1.91</td>" in page


def test_fedprox_keeps_a_sites_pass_near_the_global_weights(tmp_path: Path) -> None:
    """The same local pass from the same global weights: with FedProx's proximal term the
    site's weights move less far from them than with plain FedAvg, and more mu, less far."""
    import torch
    from safetensors.torch import save_file

    from bastion.federated import local

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=generator)
    y = (x[:, 0] + x[:, 1] > 0).long()
    data = tmp_path / "site.safetensors"
    held_out = {"x_test": x[:20].clone(), "y_test": y[:20].clone()}
    save_file({"x_train": x, "y_train": y, **held_out}, str(data))

    def distance(**strategy: Any) -> float:
        plan = FederatedPlan(
            model={"builtin": "mlp", "hidden": [8]},
            train={"epochs": 3, "batch_size": 20, "lr": 0.2},
            input_shape=(6,),
            classes=2,
            sites=3,
            rounds=1,
            min_clients=3,
            max_rows=200,
            secure_aggregation=False,
            output=str(tmp_path),
            **strategy,
        )
        start = local.weights(local.initial_model(plan))
        moved, _, _ = local.local_update(plan, start, data, server_round=1)
        return float(sum(((m - s) ** 2).sum() for m, s in zip(moved, start, strict=True)))

    plain = distance(strategy="fedavg")
    assert distance(strategy="fedprox", proximal_mu=0.0) == pytest.approx(plain)
    near = distance(strategy="fedprox", proximal_mu=1.0)
    nearer = distance(strategy="fedprox", proximal_mu=3.0)
    assert nearer < near < plain
