"""PostgreSQL for tests: a fresh schema per test; CI must have the server running."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bastion.db import scratch_schema
from bastion.errors import ServiceUnavailable

PG_URL = os.environ.get(
    "BASTION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def postgres_schema() -> Iterator[str]:
    """Yield a URL bound to a new schema; fail in CI, skip elsewhere, if PostgreSQL is down."""
    try:
        context = scratch_schema(PG_URL, prefix="bastion_test")
        url = context.__enter__()
    except ServiceUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    try:
        yield url
    finally:
        context.__exit__(None, None, None)
