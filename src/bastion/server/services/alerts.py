"""Insider-threat signals: unusual behaviour of one identity, stored as alerts and audited.

- ``self_approval``: someone tried to approve or reject their own model version or request,
  or to acknowledge an alert about themselves;
- ``outside_projects``: a request into a project the caller is not a member of;
- ``repeated_denials``: ``REPEATED_DENIALS`` refused requests within ``DENIAL_WINDOW``;
- ``password_guessing``: ``GUESSING_FAILURES`` failed logins of one account, from any
  addresses, within the login throttle's window (see :mod:`bastion.server.services.identity`);
- ``password_reset``: an administrator replaced a person's existing password (and could
  now log in as them);
- ``export_volume``: more model exports in a day than ``EXPORT_FACTOR`` times the caller's
  daily average over the previous 30 days (and at least ``EXPORT_FLOOR``).

Every refused request (403) is an ``access.denied`` audit event. An alert of one kind for
one actor is raised at most once per window, so a burst does not drown the list.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from bastion.errors import Conflict, NotFound, SeparationOfDuties
from bastion.server.db.models import AccessDenial, Alert, Project, Run, utcnow
from bastion.server.db.session import UnitOfWork

__all__ = [
    "ALERT_KINDS",
    "acknowledge",
    "check_export_volume",
    "list_alerts",
    "open_alerts",
    "raise_alert",
    "record_denial",
]

log = logging.getLogger("bastion.server")

ALERT_KINDS = (
    "self_approval",
    "outside_projects",
    "repeated_denials",
    "export_volume",
    "password_guessing",
    "password_reset",
)
REPEATED_DENIALS = 5
DENIAL_WINDOW = dt.timedelta(minutes=10)
ALERT_WINDOW = dt.timedelta(hours=1)
EXPORT_FACTOR = 3.0
EXPORT_FLOOR = 5


def raise_alert(
    unit: UnitOfWork, *, kind: str, actor: str, project: str | None, details: dict[str, Any]
) -> Alert | None:
    """Store the alert unless the same kind was raised for this actor within the window."""
    since = utcnow() - ALERT_WINDOW
    recent = unit.session.scalars(
        select(Alert).where(
            Alert.kind == kind,
            Alert.actor == actor,
            Alert.project == project,
            Alert.created_at >= since,
        )
    ).first()
    if recent is not None:
        return None
    alert = Alert(kind=kind, actor=actor, project=project, details=details)
    unit.session.add(alert)
    unit.session.flush()
    unit.record("alert.raised", f"alert:{alert.id}", {"kind": kind, "subject": actor})
    log.warning("alert %s: %s (%s)", kind, actor, project or "no project")
    return alert


def record_denial(
    unit: UnitOfWork,
    *,
    actor: str,
    method: str,
    path: str,
    reason: str,
    project: str | None,
    self_approval: bool,
    outside_project: bool,
) -> None:
    """Audit a refused request and raise the alerts it signals."""
    now = utcnow()
    unit.session.add(AccessDenial(actor=actor, created_at=now))
    unit.record("access.denied", path[:500], {"method": method, "reason": reason[:300]})
    detail = {"method": method, "path": path[:500], "reason": reason[:300]}
    if self_approval:
        raise_alert(unit, kind="self_approval", actor=actor, project=project, details=detail)
    if outside_project:
        raise_alert(unit, kind="outside_projects", actor=actor, project=project, details=detail)
    unit.session.flush()
    count = unit.session.scalar(
        select(func.count())
        .select_from(AccessDenial)
        .where(AccessDenial.actor == actor, AccessDenial.created_at >= now - DENIAL_WINDOW)
    )
    if (count or 0) >= REPEATED_DENIALS:
        raise_alert(
            unit,
            kind="repeated_denials",
            actor=actor,
            project=None,
            details={"denials": count, "window_minutes": DENIAL_WINDOW.seconds // 60, **detail},
        )
    unit.session.execute(
        delete(AccessDenial).where(AccessDenial.created_at < now - dt.timedelta(days=1))
    )


def check_export_volume(unit: UnitOfWork, *, actor: str, user_id: str, project: str) -> None:
    """After an export: alert when today's exports by this user far exceed their baseline."""
    now = utcnow()
    exports = (Run.created_by == user_id) & Run.spec["job"]["type"].as_string().in_(
        ["export-model"]
    )
    today = (
        unit.session.scalar(
            select(func.count())
            .select_from(Run)
            .where(exports, Run.created_at >= now - dt.timedelta(days=1))
        )
        or 0
    )
    before = (
        unit.session.scalar(
            select(func.count())
            .select_from(Run)
            .where(
                exports,
                Run.created_at < now - dt.timedelta(days=1),
                Run.created_at >= now - dt.timedelta(days=31),
            )
        )
        or 0
    )
    baseline = before / 30
    if today >= max(EXPORT_FLOOR, EXPORT_FACTOR * baseline):
        raise_alert(
            unit,
            kind="export_volume",
            actor=actor,
            project=project,
            details={"exports_last_day": today, "daily_baseline": f"{baseline:.2f}"},
        )


def list_alerts(session: Session, *, include_acknowledged: bool) -> list[Alert]:
    query = select(Alert)
    if not include_acknowledged:
        query = query.where(Alert.acknowledged_at.is_(None))
    return list(session.scalars(query.order_by(Alert.created_at.desc()).limit(500)))


def acknowledge(
    unit: UnitOfWork, *, alert_id: str, actor: str, note: str, project: str | None = None
) -> Alert:
    """Mark an alert as looked into, with a note (audited).

    Nobody acknowledges an alert about themselves: that attempt is refused as a
    separation-of-duties breach, which raises an alert of its own. With ``project`` (the
    dashboard's project pages), only that project's alerts and the global ones are found.
    """
    alert = unit.session.get(Alert, alert_id)
    if alert is None or (project is not None and alert.project not in (None, project)):
        raise NotFound(f"alert {alert_id} does not exist")
    if alert.actor == actor:
        raise SeparationOfDuties(
            f"separation of duties: alert {alert_id} is about {actor}; "
            "somebody else must acknowledge it"
        )
    if alert.acknowledged_at is not None:
        raise Conflict(f"alert {alert_id} was already acknowledged by {alert.acknowledged_by}")
    alert.acknowledged_by, alert.acknowledged_at = actor, utcnow()
    unit.record("alert.acknowledged", f"alert:{alert_id}", {"kind": alert.kind, "note": note[:500]})
    return alert


def open_alerts(session: Session, *, project: Project, limit: int = 20) -> list[Alert]:
    """Unacknowledged alerts about this project or about no project, newest first."""
    query = (
        select(Alert)
        .where(Alert.acknowledged_at.is_(None))
        .where((Alert.project == project.name) | Alert.project.is_(None))
        .order_by(Alert.created_at.desc())
        .limit(limit)
    )
    return list(session.scalars(query))
