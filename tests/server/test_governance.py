"""Promotion: policy gates, separation of duties, N approvers, stages, rollback; refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bastion.errors import InvalidSpec
from bastion.governance.policy import GATES, parse_policy
from tests.server.conftest import ControlPlane
from tests.server.test_evaluations import EVIDENCE, make_version

POLICY = Path(__file__).resolve().parents[2] / "examples" / "policies" / "production.yaml"

GOOD_EVIDENCE: dict[str, Any] = {
    **EVIDENCE,
    "epsilon": 3.0,
    "delta": 1e-5,
    "test_accuracy": 0.95,
    "split": {"holdout": 0.2, "seed": 0, "train_rows": 455, "test_rows": 114},
}
GOOD_RESULTS: dict[str, Any] = {
    "robustness": {
        "rows": 114,
        "clean_accuracy": 0.95,
        "norm": "linf",
        "steps": 20,
        "restarts": 1,
        "schedule": "constant",
        "curve": [{"attack": "pgd", "eps": 0.05, "robust_accuracy": 0.9}],
    },
    "membership": {
        "attack": "lira",
        "rows": 228,
        "members": 114,
        "epsilon": 3.0,
        "auc": 0.52,
        "tpr_at_0.1%_fpr": 0.0,
        "tpr_at_1%_fpr": 0.02,
    },
    "fairness": {
        "rows": 114,
        "features": {},
        "max_demographic_parity_difference": 0.1,
        "max_equalized_odds_difference": 0.2,
    },
}


def _put(cp: ControlPlane, document: Any, name: str = "production") -> Any:
    return cp.client.put(
        f"/api/v1/projects/p1/policies/{name}",
        json={"document": document},
        headers=cp.as_(cp.admin_token),
    )


def _promote(cp: ControlPlane, token: str, version: int = 1, **body: Any) -> Any:
    return cp.client.post(
        f"/api/v1/projects/p1/models/m/versions/{version}/promote",
        json=body,
        headers=cp.as_(token),
    )


def _decide(cp: ControlPlane, token: str, verb: str, version: int = 1) -> Any:
    return cp.client.post(
        f"/api/v1/projects/p1/models/m/versions/{version}/{verb}",
        json={"comment": f"{verb} after reading the card"},
        headers=cp.as_(token),
    )


def _stage(cp: ControlPlane, version: int) -> str:
    found = cp.client.get(
        f"/api/v1/projects/p1/models/m/versions/{version}", headers=cp.as_(cp.admin_token)
    )
    stage: str = found.json()["stage"]
    return stage


def test_the_example_policies_name_every_gate_and_parse() -> None:
    """The production policy names every gate but the language models' two, which their own
    example policy names."""
    policy = parse_policy(POLICY.read_text(), source=str(POLICY))
    language_gates = {"max_canary_exposure", "max_extracted_identifiers"}
    assert set(yaml.safe_load(POLICY.read_text())) == set(GATES) - language_gates
    assert policy.required_approvals == 1
    language = POLICY.with_name("language-models.yaml")
    parsed = parse_policy(language.read_text())
    assert (parsed.max_canary_exposure, parsed.max_extracted_identifiers) == (4.0, 0)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"min_acuracy": 0.9}, "document.min_acuracy: Extra inputs are not permitted"),
        ({}, "name at least one gate"),
        ({"max_mia_tpr_at_fpr": {"fpr": 0.05, "value": 0.1}}, "fpr must be 0.001 or 0.01"),
        ({"min_accuracy": 1.5}, "min_accuracy"),
        ({"approvals": -1}, "approvals"),
    ],
)
def test_bad_policies_are_refused_when_saved(
    control_plane: ControlPlane, role_tokens: dict[str, str], document: Any, message: str
) -> None:
    refused = _put(control_plane, document)
    assert refused.status_code == 422
    assert any(part in refused.text for part in message.split("|")), refused.text
    assert (
        control_plane.client.get(
            "/api/v1/projects/p1/policies", headers=control_plane.as_(control_plane.admin_token)
        ).json()
        == []
    )
    with pytest.raises(InvalidSpec, match=r"unknown gate|at least one gate|fpr|approvals|accuracy"):
        parse_policy(document)


def test_a_failed_gate_is_recorded_and_opens_no_approval(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    make_version(cp, evidence=EVIDENCE)  # no DP, attackable, no fairness evaluation
    missing = _promote(cp, role_tokens["ml-engineer"], to="production")
    assert missing.status_code == 409 and "has no policy 'production'" in missing.text
    assert _put(cp, yaml.safe_load(POLICY.read_text())).status_code == 200
    failed = _promote(cp, role_tokens["ml-engineer"], to="production")
    assert failed.status_code == 201
    approval = failed.json()
    assert approval["status"] == "failed" and approval["policy"] == "production"
    results = {g["gate"]: g for g in approval["gate_results"]}
    assert len(results) == len(GATES) - 3  # every gate but approvals and the two of language models
    assert not results["max_epsilon"]["passed"]
    assert results["max_epsilon"]["actual"] == "not trained with DP"
    assert not results["max_mia_auc"]["passed"] and results["max_mia_auc"]["actual"] == "0.8"
    assert not results["min_robust_accuracy"]["passed"]
    assert not results["max_demographic_parity_difference"]["passed"]
    assert results["require_signature"]["passed"] and results["min_accuracy"]["passed"]
    assert _decide(cp, role_tokens["reviewer"], "approve").status_code == 409
    assert _stage(cp, 1) == "none"
    events = cp.client.get("/api/v1/audit/events?limit=100", headers=cp.as_(cp.admin_token))
    promoted = [e for e in events.json() if e["action"] == "model.promote"]
    assert promoted and promoted[-1]["details"]["gates"]["max_epsilon"] == "fail"


def test_two_distinct_reviewers_promote_and_the_creator_never_can(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    make_version(cp, evidence=GOOD_EVIDENCE, results=GOOD_RESULTS, number=1)
    make_version(cp, evidence=GOOD_EVIDENCE, results=GOOD_RESULTS, number=2)
    policy = {**yaml.safe_load(POLICY.read_text()), "approvals": 2}
    policy.pop("require_pii_scan"), policy.pop("require_poisoning_scan")  # no dataset rows here
    policy.pop("require_sandbox")  # versions made here without a run, so without its isolation
    assert _put(cp, policy).status_code == 200
    engineer, reviewer, admin = (
        role_tokens["ml-engineer"],
        role_tokens["reviewer"],
        cp.admin_token,
    )
    opened = _promote(cp, engineer, to="production")
    assert opened.status_code == 201, opened.text
    assert opened.json()["status"] == "pending" and opened.json()["required_approvals"] == 2
    assert _promote(cp, engineer, to="production").status_code == 409  # one pending at a time
    # The creator of the version (who also asked) can never decide, even as a reviewer.
    cp.client.put(
        "/api/v1/projects/p1/members/engineer", json={"role": "reviewer"}, headers=cp.as_(admin)
    )
    own = _decide(cp, engineer, "approve")
    assert own.status_code == 403 and "separation of duties" in own.json()["detail"]
    first = _decide(cp, reviewer, "approve")
    assert first.status_code == 200 and first.json()["status"] == "pending"
    assert _stage(cp, 1) == "none"  # one approval of two: not yet
    assert _decide(cp, reviewer, "approve").status_code == 409  # the same reviewer twice
    second = _decide(cp, admin, "approve")
    assert second.json()["status"] == "approved" and _stage(cp, 1) == "production"
    # Version 2 replaces it; version 1 is archived; then a rollback brings 1 back.
    cp.client.put(
        "/api/v1/projects/p1/members/engineer",
        json={"role": "ml-engineer"},
        headers=cp.as_(admin),
    )
    assert _promote(cp, engineer, 2, to="production").json()["status"] == "pending"
    assert _decide(cp, reviewer, "approve", 2).json()["status"] == "pending"
    assert _decide(cp, admin, "approve", 2).json()["status"] == "approved"
    assert (_stage(cp, 1), _stage(cp, 2)) == ("archived", "production")
    back = cp.client.post(
        "/api/v1/projects/p1/models/m/rollback",
        json={"to_version": 1, "reason": "v2 misbehaves"},
        headers=cp.as_(reviewer),
    )
    assert back.status_code == 200 and (_stage(cp, 1), _stage(cp, 2)) == ("production", "archived")
    history = cp.client.get("/api/v1/projects/p1/models/m/history", headers=cp.as_(admin)).json()
    assert [(h["version"], h["to_stage"]) for h in history] == [
        (1, "production"),
        (1, "archived"),
        (2, "production"),
        (2, "archived"),
        (1, "production"),
    ]
    assert history[-1]["reason"] == "rollback: v2 misbehaves"
    actions = [
        e["action"]
        for e in cp.client.get("/api/v1/audit/events?limit=200", headers=cp.as_(admin)).json()
    ]
    assert actions.count("approval.approved") == 4 and actions.count("model.stage") == 5


def test_rejection_rollback_and_archive_refusals(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    make_version(cp, evidence=GOOD_EVIDENCE, results=GOOD_RESULTS)
    assert _put(cp, {"require_signature": True, "approvals": 1}, name="staging").status_code == 200
    engineer, reviewer = role_tokens["ml-engineer"], role_tokens["reviewer"]
    assert _promote(cp, engineer, to="staging").json()["status"] == "pending"
    rejected = _decide(cp, reviewer, "reject")
    assert rejected.json()["status"] == "rejected" and _stage(cp, 1) == "none"
    never = cp.client.post(
        "/api/v1/projects/p1/models/m/rollback",
        json={"to_version": 1},
        headers=cp.as_(reviewer),
    )
    assert never.status_code == 409 and "never in production" in never.text
    denied = cp.client.post(
        "/api/v1/projects/p1/models/m/rollback",
        json={"to_version": 1},
        headers=cp.as_(engineer),
    )
    assert denied.status_code == 403  # ml-engineers cannot move production
    archived = cp.client.post(
        "/api/v1/projects/p1/models/m/versions/1/archive",
        json={"comment": "superseded"},
        headers=cp.as_(engineer),
    )
    assert archived.status_code == 200 and archived.json()["stage"] == "archived"
    again = _promote(cp, engineer, to="staging")
    assert again.status_code == 409 and "archived" in again.text
    auditor = _promote(cp, role_tokens["auditor"], to="staging")
    assert auditor.status_code == 403


def test_runs_must_declare_a_purpose_the_dataset_was_collected_for(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    from tests.server.test_compliance import make_dataset

    cp = control_plane
    make_dataset(cp, name="patients", purpose="diagnosis support; readmission risk", subject="id")
    make_dataset(cp, name="claims", purpose="", subject=None)
    engineer = cp.as_(role_tokens["ml-engineer"])

    def submit(dataset: str, purpose: str | None) -> Any:
        spec: dict[str, Any] = {
            "name": "r",
            "project": "p1",
            "cluster": "c1",
            "dataset": f"{dataset}@1",
            "target": "y",
            "model": {"builtin": "logreg"},
        }
        if purpose is not None:
            spec["purpose"] = purpose
        return cp.client.post("/api/v1/projects/p1/runs", json=spec, headers=engineer)

    missing = submit("patients", None)
    assert missing.status_code == 403 and "may be used only for" in missing.text
    wrong = submit("patients", "marketing")
    assert wrong.status_code == 403 and "purpose limitation" in wrong.text
    assert submit("patients", " Readmission Risk ").status_code == 201
    assert (
        submit("claims", "anything").status_code == 201
    )  # no purpose declared: the report flags it
