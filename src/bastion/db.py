"""Database engines for Bastion's local store: SQLite by default, PostgreSQL for teams.

``locked_transaction`` serialises writers that must read-then-append (the audit
chain): ``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory lock on
PostgreSQL. Either way two processes appending at once take turns.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from bastion.errors import ConfigurationError, ServiceUnavailable

__all__ = [
    "SINGLE_READ_OPTIONS",
    "SQLITE_WRITE_OPTIONS",
    "create_db_engine",
    "database_errors",
    "lock_for_append",
    "locked_transaction",
    "metadata",
    "scratch_schema",
]

metadata = MetaData()

_BEGIN_OPTION = "bastion_sqlite_begin"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event (below) emit BEGIN, so writers can ask for IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        if mode != "AUTOCOMMIT":  # single-statement reads need no transaction
            conn.exec_driver_sql(f"BEGIN {mode}")


def create_db_engine(url: str) -> Engine:
    """Create an engine for ``url`` (``sqlite:///file`` or ``postgresql+psycopg://...``)."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigurationError(f"invalid database URL: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Created 0600 whatever the umask: SQLite gives its -wal and -shm files the
            # database file's mode.
            os.close(os.open(path, os.O_CREAT | os.O_RDONLY, 0o600))
        engine = create_engine(parsed, connect_args={"timeout": 60})
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        return create_engine(parsed, pool_pre_ping=True)
    raise ConfigurationError(
        f"unsupported database {backend!r}; use sqlite:///PATH or postgresql+psycopg://..."
    )


@contextlib.contextmanager
def database_errors(url: str) -> Iterator[None]:
    """A database that cannot be used, as one line: which one (password hidden) and the
    driver's reason, e.g. that it does not exist or refused the connection."""
    try:
        yield
    except OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        where = make_url(url).render_as_string(hide_password=True)
        raise ServiceUnavailable(
            f"cannot use the database {where}: {reason}; create it, start it, or give another "
            "with --db"
        ) from None


@contextlib.contextmanager
def scratch_schema(base_url: str, *, prefix: str = "bastion_scratch") -> Iterator[str]:
    """A throwaway PostgreSQL schema for tests, benchmarks and trial runs.

    Yields ``base_url`` with ``search_path`` set to a new schema, dropped afterwards.
    Raises :class:`ServiceUnavailable` when the server cannot be reached.
    """
    admin = create_engine(base_url)
    try:
        with admin.connect():
            pass
    except Exception as exc:
        admin.dispose()
        raise ServiceUnavailable(
            f"PostgreSQL at {make_url(base_url).host} is unreachable: {exc}"
        ) from None
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{base_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _advisory_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


#: Execution options that make a SQLite transaction take the write lock at BEGIN.
SQLITE_WRITE_OPTIONS = {_BEGIN_OPTION: "IMMEDIATE"}
#: Execution options for a single-statement read: no BEGIN/ROLLBACK round trips on SQLite.
SINGLE_READ_OPTIONS = {_BEGIN_OPTION: "AUTOCOMMIT"}


def lock_for_append(conn: Connection, lock_name: str = "bastion.audit") -> None:
    """Serialise read-then-append writers inside the current transaction.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: nothing to do here, the
    transaction already holds the database write lock (``BEGIN IMMEDIATE``).
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _advisory_key(lock_name)})


@contextlib.contextmanager
def locked_transaction(engine: Engine, lock_name: str) -> Iterator[Connection]:
    """A transaction that holds the database-wide write lock named ``lock_name``."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execution_options(**SQLITE_WRITE_OPTIONS)
        with conn.begin():
            lock_for_append(conn, lock_name)
            yield conn
