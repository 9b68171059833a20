"""The Alembic history builds exactly the schema the ORM expects, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import bastion.security.audit
import bastion.server.db.models
from bastion.db import create_db_engine, metadata
from bastion.server.db.migrate import current_revision, head_revision, upgrade


def test_migrations_match_the_models(db_url: str) -> None:
    engine = create_db_engine(db_url)
    assert current_revision(engine) is None
    assert upgrade(engine) == head_revision()
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []
    assert bastion.security.audit.audit_events.name in metadata.tables
    # Upgrading again is a no-op.
    assert upgrade(engine) == head_revision()
    engine.dispose()
