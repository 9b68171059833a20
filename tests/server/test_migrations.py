"""The Alembic history builds exactly the schema the ORM expects, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select

import bastion.security.audit_log
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
    assert bastion.security.audit_log.audit_events.name in metadata.tables
    # Upgrading again is a no-op.
    assert upgrade(engine) == head_revision()
    engine.dispose()


def test_schemas_recorded_before_the_data_boundary_are_published_on_upgrade(db_url: str) -> None:
    from sqlalchemy.orm import Session

    from bastion.data.schema import parse_schema
    from bastion.server.db.models import Dataset, DatasetVersion, Project, User

    engine = create_db_engine(db_url)
    upgrade(engine, "0009")
    exact = {
        "kind": "table",
        "columns": [
            {
                "name": "card_number",
                "type": "integer",
                "nullable": False,
                "minimum": 60470318753,
                "maximum": 4.98e18,
            },
            {"name": "mrn", "type": "string", "nullable": False, "max_length": 9},
            {
                "name": "mean_radius",
                "type": "float",
                "nullable": False,
                "minimum": 6.981,
                "maximum": 28.11,
            },
            {
                "name": "ward",
                "type": "category",
                "nullable": False,
                "categories": ["cardiology", "ZQ-ward-of-one"],
            },
        ],
    }
    with Session(engine) as session:
        user, project = User(username="steward", kind="human"), Project(name="p")
        session.add_all([user, project])
        session.flush()
        dataset = Dataset(project_id=project.id, name="patients")
        session.add(dataset)
        session.flush()
        session.add(
            DatasetVersion(
                dataset_id=dataset.id,
                version=1,
                schema_=exact,
                row_count=10,
                manifest_hash="0" * 64,
                summaries={"identifier_columns": ["card_number"]},
                created_by=user.id,
                subject_id_column="mrn",
            )
        )
        session.commit()
    assert upgrade(engine) == head_revision()
    with Session(engine) as session:
        recorded = session.scalars(select(DatasetVersion)).one().schema_
    stored = parse_schema(recorded).model_dump(mode="json")  # a valid published schema
    assert stored == {
        "kind": "table",
        "published": True,
        "columns": [
            {
                "name": "card_number",
                "type": "integer",
                "nullable": False,
                "minimum": None,
                "maximum": None,
                "categories": None,
                "max_length": None,
                "redacted": True,
                "categories_withheld": 0,
            },
            {
                "name": "mrn",
                "type": "string",
                "nullable": False,
                "minimum": None,
                "maximum": None,
                "categories": None,
                "max_length": None,
                "redacted": True,
                "categories_withheld": 0,
            },
            {
                "name": "mean_radius",
                "type": "float",
                "nullable": False,
                "minimum": 0.0,
                "maximum": 30.0,
                "categories": None,
                "max_length": None,
                "redacted": False,
                "categories_withheld": 0,
            },
            {
                "name": "ward",
                "type": "category",
                "nullable": False,
                "minimum": None,
                "maximum": None,
                "categories": [],
                "max_length": None,
                "redacted": False,
                "categories_withheld": 2,
            },
        ],
    }
    engine.dispose()
