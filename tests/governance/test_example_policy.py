"""The example production policy is one the reference model of examples/patients.yaml passes,
and one a model trained without its safeguards fails (the gates read real evidence)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from bastion.agent.fanout import LocalFanOut
from bastion.data.ingest import Loaded
from bastion.data.reference import PATIENT_PII_COLUMNS, patients
from bastion.evaluate.attacks import input_bounds
from bastion.evaluate.card import build_card
from bastion.evaluate.config import MembershipConfig
from bastion.evaluate.fairness import evaluate_fairness
from bastion.evaluate.membership import evaluate_membership
from bastion.evaluate.robustness import accuracy, evaluate_robustness
from bastion.governance.policy import evaluate_gates, parse_policy
from bastion.spec import TrainJob, load_spec
from bastion.train.data import fit_preprocessing, split_rows
from bastion.train.models import build_model
from bastion.train.recipe import recipe
from bastion.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
#: Shadow models of the membership audit: 16 in examples/patients.yaml; fewer in CI.
SHADOWS = 4 * int(os.environ.get("BASTION_SLOW_SCALE", "1"))


def _card_of(job: TrainJob) -> dict[str, Any]:
    """Train and evaluate ``job``'s recipe on the patients table (identifiers left out)."""
    frame = patients(seed=0).drop(columns=list(PATIENT_PII_COLUMNS))
    data = Loaded(kind="table", frame=frame)
    prep = fit_preprocessing(data, target="diagnosis")
    x, y = prep.features(data), prep.labels(data)
    config = job.train
    _, train, test = split_rows(y, holdout=config.holdout, seed=config.seed)
    torch.manual_seed(config.seed)
    model = build_model(job.model, input_shape=prep.input_shape, classes=len(prep.classes))
    lower, upper = input_bounds(x, images=False)
    model, hooks, _ = recipe(model, config, lower=lower, upper=upper)
    result = Trainer(config, hooks).fit(model, x[train], y[train])
    trained = result.model.eval()
    assert job.evaluate is not None and job.evaluate.robustness is not None
    robustness = evaluate_robustness(
        trained, x[test], y[test], job.evaluate.robustness, lower=lower, upper=upper
    )
    membership = evaluate_membership(
        trained,
        train=(x[train], y[train]),
        test=(x[test], y[test]),
        config=MembershipConfig(attack="lira", shadow_models=SHADOWS),
        model_spec=job.model.model_dump(mode="json"),
        train_config=config.model_dump(mode="json"),
        classes=len(prep.classes),
        fanout=LocalFanOut(2),
        epsilon=result.epsilon,
    )
    with torch.no_grad():
        predicted = trained(x[test]).argmax(dim=1).numpy()
    assert job.evaluate.fairness is not None
    fairness = evaluate_fairness(
        y[test].numpy(),
        predicted,
        {"sex": frame["sex"].iloc[test]},
        classes=prep.classes,
        config=job.evaluate.fairness,
    )
    evidence = {
        "dataset": "patients@2",
        "epsilon": result.epsilon,
        "delta": 1e-5,
        "train": config.model_dump(mode="json"),
        "test_accuracy": accuracy(trained, x[test], y[test]),
    }
    return build_card(
        name="patients-mlp",
        version={
            "version": 1,
            "stage": "none",
            "evidence": evidence,
            "signature": "signed",
            "isolation": "bubblewrap",
        },
        evaluations={"robustness": robustness, "membership": membership, "fairness": fairness},
        dataset_summaries={
            "pii": {"columns": [{"column": "ssn", "entity": "US_SSN"}]},
            "poisoning": {"label_issues": {"rows_scanned": 569, "count": 3}},
        },
    )


@pytest.mark.slow
def test_the_reference_model_passes_the_example_policy_and_an_unsafe_one_fails() -> None:
    policy = parse_policy((ROOT / "examples" / "policies" / "production.yaml").read_text())
    job = load_spec(ROOT / "examples" / "patients.yaml").job
    assert isinstance(job, TrainJob)
    results = evaluate_gates(policy, _card_of(job))
    failed = {r.gate: r.actual for r in results if not r.passed}
    assert failed == {}, failed
    assert len(results) == 12  # every gate but the approvals count was checked
    # The same recipe without DP, overtrained: the privacy gates catch it.
    unsafe = job.model_copy(
        update={"train": job.train.model_copy(update={"privacy": None, "epochs": 60})}
    )
    failed_unsafe = {r.gate for r in evaluate_gates(policy, _card_of(unsafe)) if not r.passed}
    assert "max_epsilon" in failed_unsafe
