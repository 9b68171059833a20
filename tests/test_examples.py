"""The example specs in examples/ are valid run specs (and say what they run on)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.spec import load_spec

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_specs_validate(path: Path) -> None:
    spec = load_spec(path)
    assert (spec.project, spec.cluster) == ("demo", "local")


def test_the_training_examples_say_what_they_train() -> None:
    patients = load_spec(Path(__file__).parent.parent / "examples" / "patients.yaml").job
    digits = load_spec(Path(__file__).parent.parent / "examples" / "digits.yaml").job
    assert patients.type == "train" and digits.type == "train"
    assert patients.train.privacy is not None and patients.train.privacy.target_epsilon == 3.0
    assert digits.train.adversarial is not None and digits.train.adversarial.attack == "pgd"
    assert patients.model_name == "patients-mlp" and digits.dataset == "digits@1"
    assert patients.evaluate is not None and digits.evaluate is not None
    assert patients.evaluate.kinds == ["robustness", "membership", "fairness", "explain"]
    assert patients.evaluate.membership_inference is not None
    assert patients.evaluate.membership_inference.shadow_models == 16


def test_the_federated_example_names_a_dataset_per_site() -> None:
    job = load_spec(Path(__file__).parent.parent / "examples" / "federated.yaml").job
    assert job.type == "federated"
    assert job.clusters == ["local", "site-b", "site-c"] and job.aggregator == "local"
    assert set(job.datasets) == set(job.clusters)
    assert job.secure_aggregation and job.privacy is not None


def test_the_notes_example_trains_a_private_transformer_on_redacted_notes() -> None:
    job = load_spec(Path(__file__).parent.parent / "examples" / "notes.yaml").job
    assert job.type == "train" and job.dataset == "notes@2" and job.features == ["note"]
    assert job.model.model_dump()["builtin"] == "transformer"
    assert job.train.privacy is not None and job.train.privacy.target_epsilon == 3.0
