"""Property-based fuzzing of the whole API from its OpenAPI spec, as an administrator."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import hypothesis
import schemathesis
from hypothesis import HealthCheck

from tests.server.conftest import ControlPlane

#: Examples per operation; BASTION_SLOW_SCALE raises it for a deeper run.
EXAMPLES = 8 * int(os.environ.get("BASTION_SLOW_SCALE", "1"))


def _checker(operation: Any, headers: dict[str, str], failures: list[str]) -> Callable[[], None]:
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy())
    def check(case: Any) -> None:
        try:
            # Default checks: no 5xx, documented status codes and content types,
            # responses valid against their schema, schema-valid requests accepted.
            case.call_and_validate(headers=headers)
        except Exception as exc:  # collect every operation's finding, then fail once
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:400]}")

    return check


def test_no_server_errors_and_no_schema_violations(
    control_plane: ControlPlane, role_tokens: dict[str, str]
) -> None:
    cp = control_plane
    headers = cp.as_(cp.admin_token)
    spec = cp.client.get("/api/v1/openapi.json", headers=headers).json()
    schema = schemathesis.openapi.from_dict(spec)
    schema.app = cp.app
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid spec fails the test here
        operations += 1
        _checker(operation, headers, failures)()
    assert operations >= 35
    assert failures == []
