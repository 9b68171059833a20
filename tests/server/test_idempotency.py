"""A write retried with its Idempotency-Key is answered from the first attempt, never done twice."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from sqlalchemy import func, select, update

from bastion.client import Client
from bastion.errors import Conflict
from bastion.server import idempotency
from bastion.server.db.models import IdempotencyKey, Run
from bastion.server.idempotency import KEEP
from tests.server.conftest import ControlPlane, smoke_spec

RUNS = "/api/v1/projects/p1/runs"
#: The transaction-level behaviour runs on both databases; the rest on SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def token(control_plane: ControlPlane) -> str:
    """The admin's token, with project p1 and cluster c1 made (cheaper than a user per role)."""
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    assert cp.client.post("/api/v1/projects", json={"name": "p1"}, headers=admin).status_code == 201
    assert cp.client.post("/api/v1/clusters", json={"name": "c1"}, headers=admin).status_code == 201
    return cp.admin_token


def _runs(cp: ControlPlane) -> int:
    with cp.database.read() as session:
        return int(session.scalar(select(func.count()).select_from(Run)) or 0)


def _events(cp: ControlPlane, action: str) -> int:
    admin = cp.as_(cp.admin_token)
    listed = cp.client.get("/api/v1/audit/events", params={"limit": 1000}, headers=admin)
    assert listed.status_code == 200, listed.text
    return sum(1 for event in listed.json() if event["action"] == action)


def test_a_retried_submit_is_answered_once_and_carried_out_once(
    control_plane: ControlPlane, token: str
) -> None:
    cp = control_plane
    headers = {**cp.as_(token), "Idempotency-Key": "submit-1"}
    first = cp.client.post(RUNS, json=smoke_spec(), headers=headers)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = cp.client.post(RUNS, json=smoke_spec(), headers=headers)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert _runs(cp) == 1
    assert _events(cp, "run.create") == 1
    # Without a key, the same body is a new request.
    other = cp.client.post(RUNS, json=smoke_spec(), headers=cp.as_(token))
    assert other.status_code == 201
    assert other.json()["id"] != first.json()["id"]
    assert _runs(cp) == 2


@SQLITE_ONLY
def test_a_key_names_one_request(control_plane: ControlPlane, token: str) -> None:
    cp = control_plane
    headers = {**cp.as_(token), "Idempotency-Key": "k-1"}
    assert cp.client.post(RUNS, json=smoke_spec(), headers=headers).status_code == 201
    changed = smoke_spec()
    changed["name"] = "other"
    refused = cp.client.post(RUNS, json=changed, headers=headers)
    assert refused.status_code == 422
    assert "used for a different request" in refused.json()["detail"]
    assert _runs(cp) == 1


@SQLITE_ONLY
def test_keys_are_scoped_to_the_credential(control_plane: ControlPlane, token: str) -> None:
    """Another caller's identical key is another request: nobody reads someone else's answer."""
    cp = control_plane
    mine = {**cp.as_(token), "Idempotency-Key": "shared"}
    minted = cp.client.post("/api/v1/tokens", json={"name": "second"}, headers=cp.as_(token))
    assert minted.status_code == 201, minted.text
    theirs = {**cp.as_(minted.json()["token"]), "Idempotency-Key": "shared"}
    first = cp.client.post(RUNS, json=smoke_spec(), headers=mine)
    second = cp.client.post(RUNS, json=smoke_spec(), headers=theirs)
    assert first.status_code == second.status_code == 201
    assert "idempotent-replayed" not in second.headers
    assert first.json()["id"] != second.json()["id"]
    with cp.database.read() as session:
        scopes = session.scalars(select(IdempotencyKey.scope)).all()
    assert len(set(scopes)) == 2
    assert all(token not in scope for scope in scopes)  # a hash, never the credential


@SQLITE_ONLY
def test_a_refused_request_claims_nothing(control_plane: ControlPlane, token: str) -> None:
    """Nothing was committed, so the key stays free: the corrected retry runs."""
    cp = control_plane
    headers = {**cp.as_(token), "Idempotency-Key": "k-2"}
    bad = smoke_spec(cluster="nowhere")
    assert cp.client.post(RUNS, json=bad, headers=headers).status_code == 404
    assert cp.client.post(RUNS, json=smoke_spec(), headers=headers).status_code == 201
    assert _runs(cp) == 1


@SQLITE_ONLY
def test_a_request_still_running_or_whose_answer_was_lost_is_not_run_again(
    control_plane: ControlPlane, token: str
) -> None:
    cp = control_plane
    headers = {**cp.as_(token), "Idempotency-Key": "k-3"}
    assert cp.client.post(RUNS, json=smoke_spec(), headers=headers).status_code == 201
    with cp.database.engine.begin() as connection:  # as if the answer was never stored
        connection.execute(update(IdempotencyKey).values(status_code=None, body=None))
    pending = cp.client.post(RUNS, json=smoke_spec(), headers=headers)
    assert pending.status_code == 409
    assert pending.headers["retry-after"] == "1"
    assert "still being carried out" in pending.json()["detail"]
    assert _runs(cp) == 1


@SQLITE_ONLY
def test_a_key_is_forgotten_after_a_day(control_plane: ControlPlane, token: str) -> None:
    cp = control_plane
    headers = {**cp.as_(token), "Idempotency-Key": "k-4"}
    assert cp.client.post(RUNS, json=smoke_spec(), headers=headers).status_code == 201
    old = dt.datetime.now(dt.UTC) - KEEP - dt.timedelta(minutes=1)
    with cp.database.engine.begin() as connection:
        connection.execute(update(IdempotencyKey).values(created_at=old))
    again = cp.client.post(RUNS, json=smoke_spec(), headers=headers)
    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers
    assert _runs(cp) == 2


@SQLITE_ONLY
def test_a_malformed_key_is_refused(control_plane: ControlPlane, token: str) -> None:
    cp = control_plane
    for key in (b"", b"a" * 256, b"with space", "\u00fc".encode()):
        headers: dict[str, str | bytes] = {**cp.as_(token)}
        headers["Idempotency-Key"] = key
        refused = cp.client.post(RUNS, json=smoke_spec(), headers=headers)
        assert refused.status_code == 422, key
        assert "Idempotency-Key" in refused.json()["detail"]
    assert _runs(cp) == 0


class _LosesAnswers(httpx.BaseTransport):
    """Delivers each write to the control plane, then drops the first ``lose`` answers."""

    def __init__(self, inner: httpx.BaseTransport, lose: int) -> None:
        self.inner, self.lose, self.sent = inner, lose, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST":
            self.sent += 1
            if self.lose:
                self.lose -= 1
                response.read()
                raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


@SQLITE_ONLY
def test_the_sdk_retries_a_write_whose_answer_was_lost_and_reports_the_one_result(
    control_plane: ControlPlane, token: str
) -> None:
    cp = control_plane
    lossy = _LosesAnswers(cp.client._transport, lose=2)
    with Client("http://testserver", token=token, transport=lossy) as client:
        run = client.submit_run(smoke_spec())
    assert lossy.sent == 3
    assert _runs(cp) == 1
    assert run.status == "queued"


@SQLITE_ONLY
def test_without_the_retry_key_a_lost_answer_would_have_made_two_runs(
    control_plane: ControlPlane, token: str
) -> None:
    """The control case: the same lossy link, keys stripped, duplicates the run."""
    cp = control_plane

    class _Strips(_LosesAnswers):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            del request.headers["idempotency-key"]
            return super().handle_request(request)

    lossy = _Strips(cp.client._transport, lose=1)
    with Client("http://testserver", token=token, transport=lossy) as client:
        client.submit_run(smoke_spec())
    assert _runs(cp) == 2


@SQLITE_ONLY
def test_the_sdk_reports_a_conflict_when_the_first_attempt_never_finishes(
    control_plane: ControlPlane, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cp = control_plane
    monkeypatch.setattr("bastion.client._transport.time.sleep", lambda _seconds: None)

    class _Unstored(_LosesAnswers):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            try:
                return super().handle_request(request)
            finally:
                with cp.database.engine.begin() as connection:
                    connection.execute(update(IdempotencyKey).values(status_code=None, body=None))

    lossy = _Unstored(cp.client._transport, lose=1)
    with (
        Client("http://testserver", token=token, transport=lossy, timeout=0.2) as client,
        pytest.raises(Conflict, match="still being carried out"),
    ):
        client.submit_run(smoke_spec())
    assert _runs(cp) == 1


def test_two_attempts_at_once_commit_one_change(control_plane: ControlPlane, token: str) -> None:
    """The claim is made in the change's own transaction: the second of two concurrent
    attempts fails on it and rolls back its change with it."""
    cp = control_plane
    claim = idempotency.Claim(scope="s" * 64, key="k", request_hash="h" * 64)
    reset = idempotency._CURRENT.set(claim)
    try:
        with cp.database.write(actor="test") as unit:
            unit.record("test.first", "x")
        assert claim.claimed
        second = idempotency.Claim(scope="s" * 64, key="k", request_hash="h" * 64)
        idempotency._CURRENT.set(second)
        with (
            pytest.raises(Conflict, match="carried out already"),
            cp.database.write(actor="test") as unit,
        ):
            unit.record("test.second", "x")
        assert not second.claimed
    finally:
        idempotency._CURRENT.reset(reset)
    assert _events(cp, "test.first") == 1
    assert _events(cp, "test.second") == 0


@SQLITE_ONLY
def test_a_stored_answer_is_given_again_only_to_a_still_valid_credential(
    control_plane: ControlPlane, token: str
) -> None:
    cp = control_plane
    minted = cp.client.post("/api/v1/tokens", json={"name": "short"}, headers=cp.as_(token))
    assert minted.status_code == 201, minted.text
    other, other_id = minted.json()["token"], minted.json()["id"]
    headers = {**cp.as_(other), "Idempotency-Key": "k-revoked"}
    assert cp.client.post(RUNS, json=smoke_spec(), headers=headers).status_code == 201
    revoked = cp.client.delete(f"/api/v1/tokens/{other_id}", headers=cp.as_(token))
    assert revoked.status_code in (200, 204), revoked.text
    cp.database.auth_cache.clear()
    again = cp.client.post(RUNS, json=smoke_spec(), headers=headers)
    assert again.status_code == 401
    assert "idempotent-replayed" not in again.headers
    assert _runs(cp) == 1


@SQLITE_ONLY
def test_an_answer_holding_a_secret_is_never_stored(
    control_plane: ControlPlane, token: str
) -> None:
    cp = control_plane
    headers = {**cp.as_(token), "Idempotency-Key": "k-token"}
    minted = cp.client.post("/api/v1/tokens", json={"name": "ci"}, headers=headers)
    assert minted.status_code == 201, minted.text
    secret = minted.json()["token"]
    with cp.database.read() as session:
        bodies = session.scalars(select(IdempotencyKey.body)).all()
    assert bodies == [None]
    assert all(secret not in (body or "") for body in bodies)
    again = cp.client.post("/api/v1/tokens", json={"name": "ci"}, headers=headers)
    assert again.status_code == 409
    assert "secret shown once" in again.json()["detail"]
    listed = cp.client.get("/api/v1/tokens", headers=cp.as_(token)).json()
    assert [t["name"] for t in listed].count("ci") == 1  # not made twice


@SQLITE_ONLY
def test_a_request_carrying_a_password_is_neither_hashed_nor_claimed(
    control_plane: ControlPlane, token: str
) -> None:
    cp = control_plane
    headers = {**cp.as_(token), "Idempotency-Key": "k-password"}
    body = {"username": "rita", "password": "correct horse battery staple"}
    assert cp.client.post("/api/v1/users", json=body, headers=headers).status_code == 201
    with cp.database.read() as session:
        assert session.scalars(select(IdempotencyKey)).all() == []
