"""Hypothesis fuzzing of the request body: never a 5xx; every refused body a 422 that
names a field and a rule."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.inference.app import ServeState, create_serve_app
from tests.inference.conftest import Workload, make_state, mint_key

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def fuzzed(patients_workload: Workload) -> Iterator[tuple[TestClient, str, ServeState]]:
    token, record = mint_key(("predict", "explain"))
    state, _, _ = make_state(patients_workload, records=[record])
    with TestClient(create_serve_app(state)) as client:
        yield client, token, state
    state.audit.close()


def _row_strategy(workload: Workload) -> st.SearchStrategy[dict[str, Any]]:
    """Rows with the model's features, each value in range or anything at all."""
    frame = workload.frame.drop(columns=["diagnosis"])  # type: ignore[attr-defined]
    fields = {}
    for name in frame.columns:
        column = frame[name]
        if column.dtype.kind in "if":
            sane = st.floats(float(column.min()), float(column.max()))
        else:
            sane = st.sampled_from(sorted(column.astype(str).unique()))
        fields[str(name)] = sane | JSON
    return st.fixed_dictionaries(fields, optional={"extra": JSON})


def _check(response: Any) -> None:
    assert response.status_code in (200, 422), (response.status_code, response.text)
    if response.status_code == 422:
        errors = response.json()["errors"]
        assert errors and all(e["field"] and e["rule"] for e in errors)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=JSON)
def test_arbitrary_json_is_never_a_server_error(
    fuzzed: tuple[TestClient, str, ServeState], body: Any
) -> None:
    client, token, _ = fuzzed
    response = client.post(
        "/v1/predict", content=json.dumps(body), headers={"Authorization": f"Bearer {token}"}
    )
    _check(response)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_are_never_a_server_error(
    fuzzed: tuple[TestClient, str, ServeState], raw: bytes
) -> None:
    client, token, _ = fuzzed
    _check(client.post("/v1/predict", content=raw, headers={"Authorization": f"Bearer {token}"}))


def test_rows_near_the_contract_are_served_or_refused_field_by_field(
    fuzzed: tuple[TestClient, str, ServeState], patients_workload: Workload
) -> None:
    client, token, _ = fuzzed
    seen: set[int] = set()

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(rows=st.lists(_row_strategy(patients_workload), min_size=1, max_size=3))
    def run(rows: list[dict[str, Any]]) -> None:
        for endpoint in ("/v1/predict", "/v1/explain"):
            response = client.post(
                endpoint,
                content=json.dumps({"instances": rows}),
                headers={"Authorization": f"Bearer {token}"},
            )
            _check(response)
            seen.add(response.status_code)

    run()
    assert seen == {200, 422}  # both outcomes were exercised
