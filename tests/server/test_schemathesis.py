"""Property-based fuzzing of the whole API from its OpenAPI spec, as an administrator."""

from __future__ import annotations

import os

import hypothesis
import schemathesis
from hypothesis import HealthCheck

from tests.server.conftest import ControlPlane

#: Examples per operation; BASTION_SLOW_SCALE raises it for a deeper run.
EXAMPLES = 8 * int(os.environ.get("BASTION_SLOW_SCALE", "1"))


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
        operation = result.ok()
        operations += 1

        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            try:
                case.call_and_validate(headers=headers)
            except Exception as exc:  # collect every operation's finding, then fail once
                failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:400]}")

        check()
    assert operations >= 35
    assert failures == []
