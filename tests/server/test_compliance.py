"""HIPAA and GDPR reports from the evidence the control plane holds; in three formats."""

from __future__ import annotations

import json

import httpx
from sqlalchemy import select, text

from bastion.server.db.models import Cluster, Dataset, DatasetVersion, Project, User
from tests.server.conftest import ControlPlane
from tests.server.test_evaluations import EVIDENCE, make_version


def make_dataset(cp: ControlPlane, *, name: str, purpose: str, subject: str | None) -> None:
    with cp.database.write(actor="agent:test") as unit:
        project = unit.session.scalars(select(Project).where(Project.name == "p1")).one()
        cluster = unit.session.scalars(select(Cluster).where(Cluster.name == "c1")).one()
        steward = unit.session.scalars(select(User.id).where(User.username == "steward")).one()
        dataset = Dataset(project_id=project.id, name=name)
        unit.session.add(dataset)
        unit.session.flush()
        unit.session.add(
            DatasetVersion(
                dataset_id=dataset.id,
                version=1,
                schema_={"kind": "table", "columns": [{"name": "y"}, {"name": "x"}]},
                row_count=10,
                target="y",
                manifest_hash="ab" * 32,
                signature="sig",
                summaries={"pii": {"columns": [{"column": "ssn", "entity": "US_SSN"}]}},
                purpose=purpose,
                created_by=steward,
                cluster_id=cluster.id,
                subject_id_column=subject,
            )
        )
        unit.record("dataset.version.create", f"dataset:p1/{name}@1")


def _report(cp: ControlPlane, token: str, framework: str, fmt: str = "json") -> httpx.Response:
    response: httpx.Response = cp.client.get(
        "/api/v1/compliance/report",
        params={"framework": framework, "format": fmt},
        headers=cp.as_(token),
    )
    return response


def test_hipaa_controls_cite_evidence_and_say_what_to_fix(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    make_version(cp, evidence=EVIDENCE)
    make_dataset(cp, name="patients", purpose="diagnosis support", subject="subject_id")
    assert _report(cp, role_tokens["ml-engineer"], "hipaa").status_code == 403
    found = _report(cp, role_tokens["auditor"], "hipaa")
    assert found.status_code == 200
    report = found.json()
    controls = {c["id"]: c for c in report["controls"]}
    assert list(controls) == [
        "164.312(a)(1)",
        "164.312(b)",
        "164.312(c)(1)",
        "164.312(d)",
        "164.312(e)(1)",
    ]
    assert controls["164.312(b)"]["status"] == "pass"
    assert "audit chain verified" in controls["164.312(b)"]["evidence"][0]
    assert controls["164.312(c)(1)"]["status"] == "pass"
    assert "1/1 dataset versions with personal data" in controls["164.312(c)(1)"]["evidence"][0]
    # The test client speaks plain HTTP, and the role tokens were minted without expiry.
    assert controls["164.312(e)(1)"]["status"] == "fail"
    assert "--tls-cert" in controls["164.312(e)(1)"]["fix"]
    assert (
        controls["164.312(d)"]["status"] == "fail" and "--expires" in controls["164.312(d)"]["fix"]
    )
    assert report["summary"] == {"pass": 3, "fail": 2, "manual": 0}
    markdown = _report(cp, cp.admin_token, "hipaa", "md")
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert "## 164.312(b) Audit controls: **pass**" in markdown.text
    page = _report(cp, cp.admin_token, "hipaa", "html")
    assert page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text and "Transmission security" in page.text
    # A tampered audit row turns the audit control to fail, naming the problem.
    with cp.database.engine.begin() as connection:
        connection.execute(text("UPDATE audit_events SET actor = 'user:mallory' WHERE seq = 3"))
    broken = {c["id"]: c for c in _report(cp, cp.admin_token, "hipaa").json()["controls"]}
    assert (
        broken["164.312(b)"]["status"] == "fail" and "seq 3" in broken["164.312(b)"]["evidence"][0]
    )


def test_gdpr_records_of_processing_and_purpose_limitation(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    make_dataset(cp, name="patients", purpose="diagnosis support", subject="subject_id")
    make_dataset(cp, name="claims", purpose="", subject=None)
    report = json.loads(_report(cp, role_tokens["auditor"], "gdpr").text)
    controls = {c["id"]: c for c in report["controls"]}
    assert list(controls) == ["Art. 5", "Art. 17", "Art. 25", "Art. 30", "Art. 32", "Art. 35"]
    assert controls["Art. 5"]["status"] == "fail" and "claims" in controls["Art. 5"]["fix"]
    assert controls["Art. 17"]["status"] == "fail"
    assert "--subject-id-column: claims" in controls["Art. 17"]["fix"]
    records = controls["Art. 30"]["evidence"]
    assert any(
        r.startswith("patients: purpose diagnosis support; categories US_SSN") for r in records
    )
    assert any(r.startswith("claims: purpose NOT DECLARED") for r in records)
    assert controls["Art. 35"]["status"] == "manual"
    assert set(report["summary"]) == {"pass", "fail", "manual"}
