"""Alembic environment for the control-plane database (run through ``bastion server migrate``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import bastion.security.audit_log
import bastion.server.db.models  # noqa: F401 - registers the ORM tables on the metadata
from bastion.db import create_db_engine, metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = create_db_engine(context.config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        _run(conn)
