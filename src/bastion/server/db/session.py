"""Units of work: one transaction per request, audited in that same transaction.

A write unit begins with the database write lock (SQLite ``BEGIN IMMEDIATE``;
the audit append takes PostgreSQL's advisory lock), collects audit events with
:meth:`UnitOfWork.record`, and at the end flushes the change, appends the events
and commits, all or nothing. A write unit that changed rows but recorded no
event refuses to commit: no change without its event.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
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

__all__ = ["PAGE_WAITS_FOR_WHOLE", "AuthCache", "Database", "PageVerification", "UnitOfWork"]

_log = logging.getLogger(__name__)


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


#: Seconds a dashboard view waits for the audit chain's verification before it shows the
#: previous one's result (the verification goes on in the background).
PAGE_WAITS_FOR_WHOLE = 0.5


@dataclass(frozen=True)
class PageVerification:
    """What the audit page shows: the newest report, when the whole chain was last verified
    from its first event, and whether a newer verification is still running."""

    report: ChainReport
    whole_at: dt.datetime
    pending: bool


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
        self._failure: AuditChainError | None = None
        self._last: PageVerification | None = None
        self._job: threading.Thread | None = None
        self._verify_lock = threading.Lock()
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        event.listen(self._sessions, "after_flush", _note_write)

    def start_verification(self) -> threading.Thread:
        """Verify the audit chain in a background thread, unless one runs already: from its
        first event when that is due (at start-up, then every ``audit_whole_every``, and
        after any failure), else from the last signed checkpoint verified before."""
        with self._verify_lock:
            if self._job is None or not self._job.is_alive():
                verified = self._verified
                now = dt.datetime.now(dt.UTC)
                due = verified is None or now - verified[1] >= self.audit_whole_every
                since = None if due or verified is None else verified[0]
                self._job = threading.Thread(
                    target=self._verify, args=(since,), name="audit-verify", daemon=True
                )
                self._job.start()
            return self._job

    def _verify(self, since: VerifiedPrefix | None) -> None:
        started = dt.datetime.now(dt.UTC)
        try:
            report = self.audit.verify(since=since)
        except AuditChainError as exc:
            with self._verify_lock:
                self._verified, self._failure = None, exc
            return
        except Exception:  # the database is away: the next page view tries again
            _log.exception("could not verify the audit chain")
            return
        with self._verify_lock:
            whole_at = started
            if report.resumed_from is not None and self._verified is not None:
                whole_at = self._verified[1]
            self._verified = (report.prefix, whole_at)
            self._last = PageVerification(report=report, whole_at=whole_at, pending=False)
            self._failure = None

    def verify_audit_for_page(self) -> PageVerification:
        """The audit chain as a page shows it: the newest verification's report.

        The chain grows by an event per served request, so a page does not read it all
        on every view. Each view starts a verification in the background (see
        :meth:`start_verification`: from the last signed checkpoint, or from the first
        event when due) and waits for it at most :data:`PAGE_WAITS_FOR_WHOLE` seconds (all
        of it when nothing was verified yet); a longer one goes on, and the page shows the
        previous result marked ``pending``. A failure is shown by every view until a later
        verification from the first event passes. ``AuditLog.verify()`` (the API, the CLI,
        the compliance report) always reads everything.
        """
        job = self.start_verification()
        job.join(None if self._last is None else PAGE_WAITS_FOR_WHOLE)
        with self._verify_lock:
            failure, last = self._failure, self._last
        if failure is not None:
            raise failure
        if last is None:  # it could not run (the database is away): say why, here
            report = self.audit.verify()
            return PageVerification(report=report, whole_at=dt.datetime.now(dt.UTC), pending=False)
        return dataclasses.replace(last, pending=job.is_alive())

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
