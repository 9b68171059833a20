"""What the in-process control planes of the tests share within one test process.

A plane per test costs, besides its requests, the app's routes and the database's schema.
``create_app`` resolves every route's dependencies and response models (about a third of a
second); what it builds depends on the settings only through the request body limit, and
everything else an app serves from is set by ``bind_state``, as ``create_app`` sets it.
Migrating a new database to the head takes another quarter of a second on SQLite, most of
a second on PostgreSQL. The first new database of a process is migrated; the next ones are
made the same: on SQLite a copy of it, on PostgreSQL the statements its migration sent,
sent again to the new (empty) schema. ``initialise`` then finds nothing left to migrate.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import event, inspect, make_url

from bastion.config import Settings
from bastion.db import create_db_engine
from bastion.server.app import bind_state, create_app
from bastion.server.db.migrate import upgrade
from bastion.server.db.session import Database

__all__ = ["migrated", "plane_app"]

_Shape = tuple[int, int, frozenset[object]]
#: Apps not in use, by body limit, each with the shape it had when built.
_IDLE: dict[int, tuple[FastAPI, _Shape]] = {}


def _shape(app: FastAPI) -> _Shape:
    """What a test could add to an app: routes, middleware, error handlers."""
    return len(app.router.routes), len(app.user_middleware), frozenset(app.exception_handlers)


@contextlib.contextmanager
def plane_app(settings: Settings, database: Database) -> Iterator[FastAPI]:
    """The app ``create_app(settings, database=database)`` builds, reused if no test changed
    it; two planes open at once get two apps."""
    limit = settings.max_request_bytes  # the one setting create_app builds into the app
    idle = _IDLE.pop(limit, None)
    if idle is not None and _shape(idle[0]) == idle[1]:
        app, shape = idle
        bind_state(app, settings=settings, database=database)
    else:
        app = create_app(settings, database=database)
        shape = _shape(app)
    yield app
    _IDLE[limit] = (app, shape)


_TEMPLATE_DIR = tempfile.TemporaryDirectory(prefix="bastion-migrated-")
_TEMPLATE = Path(_TEMPLATE_DIR.name) / "control-plane.db"
_MIGRATED: list[Path] = []  # the SQLite template, once migrated
#: What migrating a new PostgreSQL schema sent to the server, statement by statement.
_POSTGRES_MIGRATION: list[tuple[str, Any]] = []


def migrated(settings: Settings) -> None:
    """Bring ``settings``' control-plane database, when it is new, to the migrations' head
    as this process migrated its first one."""
    url = make_url(settings.control_plane_database)
    if url.get_backend_name() == "sqlite" and url.database:
        _copy_sqlite(Path(url.database))
    elif url.get_backend_name() == "postgresql":
        _replay_postgres(settings.control_plane_database)


def _copy_sqlite(path: Path) -> None:
    if path.exists():
        return
    if not _MIGRATED:
        for left in _TEMPLATE.parent.iterdir():  # what a failed migration here may have left
            left.unlink()
        engine = create_db_engine(f"sqlite:///{_TEMPLATE}")
        upgrade(engine)
        engine.dispose()
        _MIGRATED.append(_TEMPLATE)
    with (
        contextlib.closing(sqlite3.connect(_TEMPLATE)) as source,
        contextlib.closing(sqlite3.connect(path)) as target,
    ):
        source.backup(target)


def _replay_postgres(url: str) -> None:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            if inspect(conn).get_table_names():
                return  # not new: initialise migrates it as it finds it
            schema = str(conn.exec_driver_sql("SELECT current_schema()").scalar())
        if _POSTGRES_MIGRATION:
            with engine.begin() as conn:
                for statement, parameters in _POSTGRES_MIGRATION:
                    conn.exec_driver_sql(statement, parameters)
            return
        sent: list[tuple[str, Any]] = []

        def record(*args: Any) -> None:  # conn, cursor, statement, parameters, context, many
            sent.append((args[2], args[3]))

        event.listen(engine, "before_cursor_execute", record)
        upgrade(engine)
        event.remove(engine, "before_cursor_execute", record)
        if not any(schema in statement for statement, _ in sent):  # else not replayable
            _POSTGRES_MIGRATION.extend(sent)
    finally:
        engine.dispose()
