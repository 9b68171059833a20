"""Units of work: one transaction per request, audited in that same transaction.

A write unit begins with the database write lock (SQLite ``BEGIN IMMEDIATE``;
the audit append takes PostgreSQL's advisory lock), collects audit events with
:meth:`UnitOfWork.record`, and at the end flushes the change, appends the events
and commits, all or nothing. A write unit that changed rows but recorded no
event refuses to commit: no change without its event.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event, inspect
from sqlalchemy.orm import Session, sessionmaker

from bastion.db import SQLITE_WRITE_OPTIONS
from bastion.errors import AuditChainError
from bastion.security.audit_chain import ChainReport, VerifiedPrefix
from bastion.security.audit_log import AuditEvent, AuditLog
from bastion.server import idempotency

__all__ = ["AuthCache", "Database", "UnitOfWork"]


@dataclass
class UnitOfWork:
    """A session plus the audit events its change must commit with."""

    session: Session
    actor: str
    events: list[AuditEvent] = field(default_factory=list)

    def record(self, action: str, target: str, details: dict[str, Any] | None = None) -> None:
        self.events.append(
            AuditEvent(actor=self.actor, action=action, target=target, details=details or {})
        )


#: Columns that only say "still alive". Heartbeats and lease renewals change them every few
#: seconds; an event for each would drown the log, so they alone need none (connections,
#: disconnections and every other change of a cluster or run are audited).
_LIVENESS: dict[str, frozenset[str]] = {
    "clusters": frozenset({"last_heartbeat"}),
    "runs": frozenset({"lease_expires_at"}),
}


def _changes_more_than_liveness(obj: object) -> bool:
    state = inspect(obj)
    liveness = _LIVENESS.get(state.mapper.local_table.name, frozenset())
    return any(attr.history.has_changes() for attr in state.attrs if attr.key not in liveness)


def _note_write(session: Session, _context: Any) -> None:
    if session.new or session.deleted:
        session.info["wrote"] = True
    for obj in session.dirty:
        session.info["wrote" if _changes_more_than_liveness(obj) else "liveness"] = True


class AuthCache:
    """Recently resolved credentials, so repeated requests skip the database.

    Entries live ``ttl`` seconds. Any committed change to tokens, users or memberships
    clears this process's cache at once; other worker processes see it within ``ttl``.
    Secrets are never cached: each request's secret is still compared to the hash.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[tuple[str, str | None], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str | None]) -> Any:
        if self.ttl <= 0:
            return None
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: tuple[str, str | None], value: Any) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self.ttl, value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


#: Audit actions after which cached credentials may be stale.
_AUTH_ACTIONS = ("token.", "user.", "member.", "project.")


class Database:
    """The control plane's engine, sessions, audit log and credential cache."""

    def __init__(
        self,
        engine: Engine,
        audit: AuditLog,
        *,
        auth_cache_seconds: float = 2.0,
        audit_whole_every: dt.timedelta = dt.timedelta(hours=1),
    ) -> None:
        self.engine = engine
        self.audit = audit
        self.auth_cache = AuthCache(auth_cache_seconds)
        self.audit_whole_every = audit_whole_every
        # The last checkpoint a page's verification reached, and when the chain was last
        # verified from its first event (per process; empty until then, and after a failure).
        self._verified: tuple[VerifiedPrefix | None, dt.datetime] | None = None
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        event.listen(self._sessions, "after_flush", _note_write)

    def verify_audit_for_page(self) -> tuple[ChainReport, dt.datetime]:
        """The audit chain verified for a page that shows it, and when the whole chain
        was last verified from its first event.

        The chain grows by an event per served request, so a page does not read it all
        on every view: it resumes from the last signed checkpoint an earlier view
        verified, and reads everything again once ``audit_whole_every`` has passed (and
        after any failure). ``AuditLog.verify()`` (the API, the CLI, the compliance
        report) always reads everything.
        """
        now = dt.datetime.now(dt.UTC)
        since, whole_at = self._verified or (None, now)
        if now - whole_at >= self.audit_whole_every:
            since = None
        try:
            report = self.audit.verify(since=since)
        except AuditChainError:
            self._verified = None
            raise
        if report.resumed_from is None:  # read from the start now (or it fell back to that)
            whole_at = now
        self._verified = (report.prefix, whole_at)
        return report, whole_at

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    @contextlib.contextmanager
    def write(self, *, actor: str) -> Iterator[UnitOfWork]:
        with self._sessions() as session:
            if self.engine.dialect.name == "sqlite":
                session.connection(execution_options=SQLITE_WRITE_OPTIONS)
            unit = UnitOfWork(session=session, actor=actor)
            try:
                yield unit
                session.flush()
                if not unit.events:
                    if session.info.get("wrote"):
                        raise RuntimeError("a change was about to commit without an audit event")
                    if session.info.get("liveness"):
                        session.commit()  # a heartbeat: liveness columns only
                        return
                    session.expunge_all()  # nothing changed: keep loaded objects readable
                    session.rollback()
                    return
                idempotency.claim_in(session)
                _, checkpoint = self.audit.append_in(session.connection(), unit.events)
                session.commit()
                idempotency.confirm()
            except BaseException:
                session.rollback()
                raise
        if any(e.action.startswith(_AUTH_ACTIONS) for e in unit.events):
            self.auth_cache.clear()
        if checkpoint is not None:
            self.audit.write_anchor(checkpoint)
