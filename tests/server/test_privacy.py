"""Erasure requests and retention holds: refusals before anything is queued."""

from __future__ import annotations

from tests.server.conftest import ControlPlane
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
