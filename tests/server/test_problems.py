"""Errors keep their kind across HTTP: RFC 9457 problem details; the SDK raises the same class."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI

from bastion import errors
from bastion.client import Client
from bastion.errors import BastionError
from tests.server.conftest import ControlPlane

PROBLEM_JSON = "application/problem+json"

#: The wire name of every error class, spelled out: these are a public contract.
PROBLEM_TYPES: dict[type[BastionError], str] = {
    errors.BastionError: "urn:bastion:error:bastion",
    errors.CheckFailed: "urn:bastion:error:check-failed",
    errors.IntegrityError: "urn:bastion:error:integrity",
    errors.UnknownKeyError: "urn:bastion:error:unknown-key",
    errors.ShreddedError: "urn:bastion:error:shredded",
    errors.SignatureError: "urn:bastion:error:signature",
    errors.UnsafeFileError: "urn:bastion:error:unsafe-file",
    errors.AuditChainError: "urn:bastion:error:audit-chain",
    errors.PolicyViolation: "urn:bastion:error:policy-violation",
    errors.NotAuthorized: "urn:bastion:error:not-authorized",
    errors.SeparationOfDuties: "urn:bastion:error:separation-of-duties",
    errors.NotAuthenticated: "urn:bastion:error:not-authenticated",
    errors.RateLimited: "urn:bastion:error:rate-limited",
    errors.UsageError: "urn:bastion:error:usage",
    errors.InvalidInput: "urn:bastion:error:invalid-input",
    errors.CodeRefused: "urn:bastion:error:code-refused",
    errors.InvalidSpec: "urn:bastion:error:invalid-spec",
    errors.NotFound: "urn:bastion:error:not-found",
    errors.Conflict: "urn:bastion:error:conflict",
    errors.ServiceUnavailable: "urn:bastion:error:service-unavailable",
    errors.ConfigurationError: "urn:bastion:error:configuration",
    errors.InsecureKeyFileError: "urn:bastion:error:insecure-key-file",
}

#: One instance of each class as domain code raises it, with the status it is sent with.
RAISED: dict[str, tuple[BastionError, int]] = {
    "signature": (errors.SignatureError("model.safetensors: signature does not match"), 409),
    "integrity": (errors.IntegrityError("data.parquet: hash mismatch"), 409),
    "unknown-key": (errors.UnknownKeyError("key 7 is not in this keyring"), 409),
    "shredded": (errors.ShreddedError("the data key was destroyed"), 409),
    "unsafe": (errors.UnsafeFileError("refused", reasons=["GLOBAL os.system"]), 409),
    "chain": (errors.AuditChainError("event 4 changed", kind="modified", seq=4), 409),
    "policy": (errors.PolicyViolation("epsilon above 8"), 403),
    "forbidden": (errors.NotAuthorized("role reviewer may not do this"), 403),
    "sod": (errors.SeparationOfDuties("you trained it"), 403),
    "unauthenticated": (errors.NotAuthenticated("token expired"), 401),
    "limited": (errors.RateLimited("slow down", retry_after=17), 429),
    "input": (errors.InvalidInput("column x is not numeric"), 422),
    "code": (errors.CodeRefused("pkg/fast.so: native code (.so); ship source only"), 422),
    "spec": (errors.InvalidSpec("spec.yaml: unknown field"), 422),
    "missing": (errors.NotFound("no project p9"), 404),
    "conflict": (errors.Conflict("exists already"), 409),
    "unavailable": (errors.ServiceUnavailable("redis is down"), 503),
    "configuration": (errors.ConfigurationError("no keyring"), 400),
}


def test_every_error_class_has_its_own_stable_problem_type() -> None:
    declared = {
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, BastionError)
    }
    assert declared == set(PROBLEM_TYPES)
    for cls, problem_type in PROBLEM_TYPES.items():
        assert cls.problem_type == problem_type, cls.__name__
        assert errors.error_class(problem_type) is cls
    assert errors.error_class("urn:bastion:error:nonsense") is BastionError
    assert errors.error_class(None) is BastionError


def _raising_app(app: FastAPI) -> None:
    @app.get("/raise/{name}")
    def _raise(name: str) -> None:
        raise RAISED[name][0]


@pytest.mark.parametrize("name", sorted(RAISED))
def test_the_sdk_raises_the_class_the_server_raised(control_plane: ControlPlane, name: str) -> None:
    cp = control_plane
    _raising_app(cp.app)
    raised, status = RAISED[name]
    response = cp.client.get(f"/raise/{name}")
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["type"] == PROBLEM_TYPES[type(raised)]
    assert body["status"] == status and body["detail"] == str(raised) and body["title"]

    client = Client(str(cp.client.base_url), transport=cp.client._transport)
    with pytest.raises(BastionError) as caught:
        client.request("GET", f"/raise/{name}")
    assert type(caught.value) is type(raised)
    assert str(raised) in str(caught.value)
    assert caught.value.exit_code == raised.exit_code
    for field in raised.problem_fields:
        assert body[field] == getattr(raised, field)
        assert getattr(caught.value, field) == getattr(raised, field)


def test_a_signature_failure_is_not_taken_for_bad_usage(control_plane: ControlPlane) -> None:
    """The reason for all of this: a 409 used to come back as Conflict, exit 2 ("bad usage")."""
    cp = control_plane
    _raising_app(cp.app)
    client = Client(str(cp.client.base_url), transport=cp.client._transport)
    with pytest.raises(errors.SignatureError) as caught:
        client.request("GET", "/raise/signature")
    assert caught.value.exit_code == 1


def test_refusals_outside_domain_code_are_problems_too(control_plane: ControlPlane) -> None:
    cp = control_plane
    admin = cp.as_(cp.admin_token)
    invalid = cp.client.post("/api/v1/projects", json={"name": "Bad Name"}, headers=admin)
    assert invalid.status_code == 422 and invalid.headers["content-type"] == PROBLEM_JSON
    assert invalid.json()["type"] == "urn:bastion:error:invalid-input"
    assert invalid.json()["errors"][0]["field"] == "body.name"

    huge = json.dumps({"name": "x", "description": "a" * (2 << 20)})
    headers = {**admin, "content-type": "application/json"}
    too_big = cp.client.post("/api/v1/projects", content=huge, headers=headers)
    assert too_big.status_code == 413 and too_big.headers["content-type"] == PROBLEM_JSON
    assert too_big.json()["type"] == "urn:bastion:error:invalid-input"

    nowhere = cp.client.get("/api/v1/no-such-route", headers=admin)
    assert nowhere.status_code == 404 and nowhere.headers["content-type"] == PROBLEM_JSON
    assert nowhere.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "Not Found",
    }

    unauthenticated = cp.client.get("/api/v1/projects")
    assert unauthenticated.json()["type"] == "urn:bastion:error:not-authenticated"
    assert unauthenticated.headers["www-authenticate"] == "Bearer"


def test_an_answer_without_a_known_type_is_mapped_by_status() -> None:
    from bastion.http_status import error_from_problem

    assert type(error_from_problem(409, {"detail": "old server"})) is errors.Conflict
    assert type(error_from_problem(404, "<html>proxy</html>")) is errors.NotFound
    limited = error_from_problem(429, {"detail": "wait"}, retry_after="9")
    assert isinstance(limited, errors.RateLimited) and limited.retry_after == 9
    assert type(error_from_problem(418, None, fallback="teapot")) is BastionError


def test_the_openapi_document_names_problem_details_for_every_error(
    control_plane: ControlPlane,
) -> None:
    cp = control_plane
    document = cp.client.get("/api/v1/openapi.json", headers=cp.as_(cp.admin_token)).json()
    assert "Problem" in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert list(response["content"]) == [PROBLEM_JSON], (method, path, status)
