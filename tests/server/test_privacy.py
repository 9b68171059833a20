"""Erasure requests and retention holds: refusals before anything is queued."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from bastion.data.publish import publish_schema
from bastion.data.schema import ColumnSchema, ColumnType, TableSchema
from bastion.errors import InvalidInput
from bastion.server.db.models import ErasureRequest, Project, User
from bastion.server.services.datasets import _check_published
from tests.server.conftest import ControlPlane, dashboard_login
from tests.server.test_compliance import make_dataset

URL = "/api/v1/projects/p1/privacy/erasures"


def test_erasure_refusals(control_plane: ControlPlane, role_tokens: dict[str, str]) -> None:
    cp = control_plane
    steward = cp.as_(role_tokens["data-steward"])
    body = {"subject_id": "S000-0000001", "reason": "the subject asked"}
    nothing = cp.client.post(URL, json=body, headers=steward)
    assert nothing.status_code == 409 and "names a subject-id column" in nothing.text
    make_dataset(cp, name="patients", purpose="care", subject="subject_id")
    agentless = cp.client.post(URL, json=body, headers=steward)
    assert agentless.status_code == 409 and "no cluster with an agent" in agentless.text
    assert cp.client.post(URL, json=body, headers=cp.as_(role_tokens["auditor"])).status_code == 403
    assert (
        cp.client.post(URL, json=body, headers=cp.as_(role_tokens["ml-engineer"])).status_code
        == 403
    )
    blank = cp.client.post(URL, json={"subject_id": " ", "reason": "x"}, headers=steward)
    assert blank.status_code == 422 and "subject_id" in blank.text
    no_reason = cp.client.post(URL, json={"subject_id": "S1", "reason": ""}, headers=steward)
    assert no_reason.status_code == 422
    missing = cp.client.get(f"{URL}/{'0' * 32}", headers=cp.as_(role_tokens["auditor"]))
    assert missing.status_code == 404
    events = cp.client.get("/api/v1/audit/events?limit=200", headers=cp.as_(cp.admin_token))
    assert "S000-0000001" not in events.text  # refused requests leave no subject id behind


def test_retention_holds_are_set_released_and_audited(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    make_dataset(cp, name="patients", purpose="care", subject="subject_id")
    steward = cp.as_(role_tokens["data-steward"])
    url = "/api/v1/projects/p1/datasets/patients/versions/1/hold"
    held = cp.client.put(url, json={"reason": "litigation"}, headers=steward)
    assert held.status_code == 200 and held.json()["retention_hold"] == "litigation"
    assert (
        cp.client.put(
            url, json={"reason": "x"}, headers=cp.as_(role_tokens["ml-engineer"])
        ).status_code
        == 403
    )
    released = cp.client.put(url, json={}, headers=steward)
    assert released.json()["retention_hold"] == ""
    events = cp.client.get("/api/v1/audit/events?limit=200", headers=cp.as_(cp.admin_token)).json()
    holds = [e["details"]["hold"] for e in events if e["action"] == "dataset.retention_hold"]
    assert holds == [True, False]


def _requests(cp: ControlPlane) -> list[str]:
    """Two requests as the erasure service leaves them (its jobs need an agent)."""
    with cp.database.write(actor="user:steward") as unit:
        project = unit.session.scalars(select(Project).where(Project.name == "p1")).one()
        steward = unit.session.scalars(select(User).where(User.username == "steward")).one()
        made = [
            ErasureRequest(
                project_id=project.id,
                subject_pseudonym=f"subj_{n:032d}",
                mode=mode,
                reason=reason,
                requested_by=steward.id,
                created_at=dt.datetime(2026, 11, 20 + n, tzinfo=dt.UTC),
            )
            for n, (mode, reason) in enumerate([("locate", "access request"), ("erase", "Art. 17")])
        ]
        unit.session.add_all(made)
        unit.session.flush()
        unit.record("privacy.erasure_requested", "test", {})
        return [m.id for m in made]


def test_the_register_of_erasure_requests_lists_them_newest_first(
    control_plane: ControlPlane, role_tokens: dict[str, str], dashboard_users: list[str]
) -> None:
    cp = control_plane
    located, erased = _requests(cp)
    listed = cp.client.get(URL, headers=cp.as_(role_tokens["auditor"]))
    assert listed.status_code == 200, listed.text
    rows = listed.json()
    assert [r["id"] for r in rows] == [erased, located]
    assert [(r["mode"], r["requested_by"], r["reason"]) for r in rows] == [
        ("erase", "steward", "Art. 17"),
        ("locate", "steward", "access request"),
    ]
    assert all(r["subject"].startswith("subj_") for r in rows)
    assert cp.client.get(URL, headers=cp.as_(role_tokens["ml-engineer"])).status_code == 403
    page = dashboard_login(cp, "steward").get("/ui/p/p1/privacy")
    assert page.status_code == 200
    table = page.text.split('id="erasures"', 1)[1]
    assert table.index(f"erasure-{erased}") < table.index(f"erasure-{located}")
    assert (
        "Art. 17" in table and "access request" in table and 'href="/ui/p/p1/privacy"' in page.text
    )
    assert 'href="/ui/p/p1/privacy"' not in dashboard_login(cp, "engineer").get("/ui/p/p1").text


def test_a_recorded_version_lists_only_column_names_as_suspects() -> None:
    """The agent reports suspected identifiers by name; anything else in that list (a value,
    a column the schema does not have) is refused before anything is stored."""
    exact = TableSchema(
        columns=[
            ColumnSchema(name="email", type=ColumnType.STRING, nullable=True, max_length=31),
            ColumnSchema(name="contact", type=ColumnType.STRING, nullable=True, max_length=40),
        ]
    )
    published = publish_schema(exact, identifiers=["email"], category_rows={}).model_dump(
        mode="json"
    )

    def fields(suspects: object) -> dict[str, object]:
        summaries = {"identifier_columns": ["email"], "suspect_columns": suspects}
        return {"schema_": published, "summaries": summaries}

    _check_published("patients", fields(["contact"]))
    _check_published("patients", fields([]))
    for leaky in (["+44 20 7946 0958"], ["contact", "ann@example.com"], "contact", [3]):
        with pytest.raises(InvalidInput, match="suspected identifiers that are not columns"):
            _check_published("patients", fields(leaky))
