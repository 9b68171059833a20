"""The same audit chain code on PostgreSQL: appends, concurrency, tamper detection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from bastion.config import Settings
from bastion.db import create_db_engine
from bastion.errors import AuditChainError
from bastion.security.audit_log import open_local_audit_log
from bastion.security.keys import load_keyring
from tests.pg import postgres_schema
from tests.security import audit_helpers as tamper
from tests.security.test_audit import _concurrent_appends

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from postgres_schema()


def test_append_verify_and_detect_tampering_on_postgres(pg_url: str, home: Path) -> None:
    settings = Settings(home=home, local_audit_database_url=pg_url, audit_checkpoint_interval=10)
    log = open_local_audit_log(settings, load_keyring(settings))
    for i in range(25):
        log.append(actor="alice", action="artifact.encrypt", target=f"f{i}", details={"i": i})
    report = log.verify()
    assert report.events == 27 and report.checkpoints == 2
    engine: Engine = create_db_engine(pg_url)
    tamper.execute(engine, "UPDATE audit_events SET details = '{\"i\":-1}' WHERE seq = 4")
    with pytest.raises(AuditChainError) as info:
        log.verify()
    assert (info.value.kind, info.value.seq) == ("modified", 4)


def test_two_processes_append_one_chain_on_postgres(pg_url: str, home: Path) -> None:
    log = _concurrent_appends(pg_url, home)
    report = log.verify()
    assert report.events == 244 and report.checkpoints == 4
