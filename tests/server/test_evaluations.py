"""Evaluations in the control plane: stored evidence, the card and scorecard, and refusals."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from bastion.errors import InvalidInput
from bastion.server.db.models import Cluster, Model, ModelVersion, Project, Run, User
from bastion.server.db.session import Database
from bastion.server.services.evaluations import MAX_SUMMARY_BYTES, record_evaluations
from tests.server.conftest import ControlPlane

XSS = "<script>alert(1)</script>"

EVIDENCE: dict[str, Any] = {
    "dataset": "patients@1",
    "dataset_manifest_hash": "ab" * 32,
    "target": "diagnosis",
    "features": ["age", XSS],
    "sensitive_features": ["sex"],
    "classes": ["0", "1"],
    "model": {"builtin": "mlp"},
    "train": {"epochs": 3, "batch_size": 64, "lr": 0.1, "optimizer": "sgd"},
    "epsilon": None,
    "train_accuracy": 1.0,
    "test_accuracy": 0.9,
    "weights_sha256": "cd" * 32,
}

RESULTS: dict[str, Any] = {
    "robustness": {
        "rows": 100,
        "clean_accuracy": 0.9,
        "norm": "linf",
        "steps": 10,
        "restarts": 1,
        "schedule": "constant",
        "curve": [
            {"attack": "pgd", "eps": 0.05, "robust_accuracy": 0.2},
            {"attack": "pgd", "eps": 0.1, "robust_accuracy": 0.05},
        ],
    },
    "membership": {
        "attack": "loss",
        "rows": 200,
        "members": 100,
        "epsilon": None,
        "auc": 0.8,
        "tpr_at_0.1%_fpr": 0.1,
        "tpr_at_1%_fpr": 0.3,
        "loss": {
            "auc": 0.8,
            "tpr_at_0.1%_fpr": 0.1,
            "tpr_at_1%_fpr": 0.3,
            "roc": [[0.0001, 0.1], [0.01, 0.3], [1.0, 1.0]],
        },
    },
}


def make_version(
    cp: ControlPlane | Database,
    *,
    evidence: dict[str, Any],
    results: dict[str, Any] | None = None,
    number: int = 1,
    signature: str = "sig",
    project_name: str = "p1",
    cluster_name: str = "c1",
) -> None:
    """A version of model m as a training run of the engineer would have registered it."""
    database = cp if isinstance(cp, Database) else cp.database
    with database.write(actor="agent:test") as unit:
        project = unit.session.scalars(select(Project).where(Project.name == project_name)).one()
        cluster = unit.session.scalars(select(Cluster).where(Cluster.name == cluster_name)).one()
        engineer = unit.session.scalars(select(User.id).where(User.username == "engineer")).one()
        model = unit.session.scalars(select(Model).where(Model.name == "m")).first()
        if model is None:
            model = Model(project_id=project.id, name="m")
        run = Run(
            project_id=project.id,
            cluster_id=cluster.id,
            name="m",
            spec={},
            status="succeeded",
            created_by=engineer,
        )
        unit.session.add_all([model, run])
        unit.session.flush()
        version = ModelVersion(
            model_id=model.id,
            version=number,
            run_id=run.id,
            evidence=evidence,
            created_by=engineer,
            manifest_hash="ef" * 32,
            signature=signature,
            cluster_id=cluster.id,
        )
        unit.session.add(version)
        unit.session.flush()
        record_evaluations(
            unit,
            project=project,
            version=version,
            reference=f"m@{number}",
            run=run,
            results=RESULTS if results is None else results,
        )


def test_the_card_and_scorecard_come_from_the_stored_evidence(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    make_version(cp, evidence=EVIDENCE)
    auditor = cp.as_(role_tokens["auditor"])
    base = "/api/v1/projects/p1/models/m/versions/1"
    listed = cp.client.get(f"{base}/evaluations", headers=auditor)
    assert listed.status_code == 200
    assert sorted(e["kind"] for e in listed.json()) == ["membership", "robustness"]
    card = cp.client.get(f"{base}/card", headers=auditor).json()
    assert card["format"] == "bastion-model-card/1" and card["model"]["name"] == "m"
    status = {item["id"]: item for item in card["scorecard"]}
    assert status["ML01"]["status"] == "fail" and "fix" in status["ML01"]  # 0.2 of 0.9 clean
    assert status["ML03"]["status"] == "fail"  # no DP
    assert status["ML04"]["status"] == "fail" and "AUC 0.800" in status["ML04"]["evidence"]
    assert status["ML06"]["status"] == "pass" and status["ML02"]["status"] == "not assessed"
    assert any("No differential privacy" in line for line in card["limitations"])
    page = cp.client.get(f"{base}/card.html", headers=auditor)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src" not in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert XSS not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert page.text.count("<svg") == 2  # the robustness curve and the ROC curve
    actions = [
        e["action"] for e in cp.client.get("/api/v1/audit/events?limit=50", headers=auditor).json()
    ]
    assert actions.count("model.evaluation") == 2


def test_an_auditor_reads_but_cannot_queue_and_old_versions_cannot_be_evaluated(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    make_version(cp, evidence=EVIDENCE)  # no held-out split recorded
    base = "/api/v1/projects/p1/models/m/versions/1/evaluate"
    body: dict[str, Any] = {"evaluate": {"fairness": {}}}
    denied = cp.client.post(base, json=body, headers=cp.as_(role_tokens["auditor"]))
    assert denied.status_code == 403
    engineer = cp.as_(role_tokens["ml-engineer"])
    refused = cp.client.post(base, json=body, headers=engineer)
    assert refused.status_code == 409 and "records no training split" in refused.json()["detail"]
    empty = cp.client.post(base, json={"evaluate": {}}, headers=engineer)
    assert empty.status_code == 422 and "asks for nothing" in empty.text
    missing = cp.client.get("/api/v1/projects/p1/models/m/versions/9/card.html", headers=engineer)
    assert missing.status_code == 404 and missing.json()["detail"] == "model 'm' has no version 9"


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ({"robustness": {}, "inversion": {}}, "unknown kind"),
        ({"fairness": [1, 2]}, "expected a mapping"),
        ({"explain": {"maps": "x" * (MAX_SUMMARY_BYTES + 1)}}, "larger than"),
        ({}, "expected a mapping of kind"),
    ],
)
def test_malformed_evaluations_are_refused(
    control_plane: ControlPlane,
    role_tokens: dict[str, str],
    results: dict[str, Any],
    message: str,
) -> None:
    cp = control_plane
    make_version(cp, evidence=EVIDENCE)
    with cp.database.write(actor="agent:test") as unit:
        project = unit.session.scalars(select(Project).where(Project.name == "p1")).one()
        version = unit.session.scalars(select(ModelVersion)).one()
        run = unit.session.get(Run, version.run_id)
        assert run is not None
        with pytest.raises(InvalidInput, match=message):
            record_evaluations(
                unit, project=project, version=version, reference="m@1", run=run, results=results
            )
