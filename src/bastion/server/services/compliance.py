"""Facts for the compliance reports, gathered from the control plane's own records."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.errors import AuditChainError
from bastion.governance.compliance import Facts
from bastion.security.audit_log import audit_events
from bastion.server.db.models import (
    Alert,
    ApiToken,
    Approval,
    Cluster,
    Dataset,
    DatasetVersion,
    ErasureRequest,
    Evaluation,
    ModelVersion,
    Run,
    User,
    utcnow,
)
from bastion.server.db.session import Database

__all__ = ["gather_facts"]


def _datasets(session: Session) -> tuple[list[dict[str, object]], dict[str, int]]:
    """Per dataset (latest version): purpose, categories of personal data, who used it."""
    counts = {"versions": 0, "personal": 0, "personal_signed": 0, "signed": 0}
    records: list[dict[str, object]] = []
    for dataset in session.scalars(select(Dataset).order_by(Dataset.name)):
        versions = list(
            session.scalars(
                select(DatasetVersion)
                .where(DatasetVersion.dataset_id == dataset.id)
                .order_by(DatasetVersion.version)
            )
        )
        categories: set[str] = set()
        personal_any = False
        for version in versions:
            pii = version.summaries.get("pii") or {}
            columns = pii.get("columns", []) if isinstance(pii, dict) else []
            found = {str(c.get("entity")) for c in columns if isinstance(c, dict)}
            personal = bool(found) or bool(version.subject_id_column)
            signed = bool(version.signature) and bool(version.manifest_hash)
            counts["versions"] += 1
            counts["signed"] += signed
            counts["personal"] += personal
            counts["personal_signed"] += personal and signed
            categories |= found
            personal_any |= personal
        if not versions:
            continue
        latest = versions[-1]
        run_ids = [v.run_id for v in versions if v.run_id]
        users = session.scalars(
            select(User.username)
            .join(Run, Run.created_by == User.id)
            .where(
                (Run.id.in_(run_ids))
                | (Run.spec["job"]["dataset"].as_string().like(f"{dataset.name}@%"))
            )
            .distinct()
        ).all()
        records.append(
            {
                "dataset": dataset.name,
                "versions": len(versions),
                "purpose": latest.purpose,
                "categories": sorted(categories),
                "personal_data": personal_any,
                "subject_id_column": latest.subject_id_column,
                "accessed_by": sorted(users),
            }
        )
    return records, counts


def gather_facts(database: Database, session: Session, *, transport: str) -> Facts:
    try:
        report = database.audit.verify()
        audit: dict[str, Any] = {
            "audit_ok": True,
            "audit_events": report.events,
            "audit_head_seq": report.head_seq,
            "audit_last_checkpoint_seq": report.last_checkpoint_seq,
        }
    except AuditChainError as exc:
        audit = {
            "audit_ok": False,
            "audit_events": 0,
            "audit_head_seq": None,
            "audit_last_checkpoint_seq": None,
            "audit_problem": str(exc),
        }
    now = utcnow()
    humans = User.kind == "human"
    active = ApiToken.revoked_at.is_(None) & (
        ApiToken.expires_at.is_(None) | (ApiToken.expires_at > now)
    )
    datasets, counts = _datasets(session)
    models = list(session.scalars(select(ModelVersion)))
    audited = set(
        session.scalars(select(Evaluation.model_version_id).where(Evaluation.kind == "membership"))
    )
    production = [m for m in models if m.stage == "production"]
    approved = set(
        session.scalars(select(Approval.model_version_id).where(Approval.status == "approved"))
    )
    overrides = session.execute(
        select(func.count())
        .select_from(audit_events)
        .where(audit_events.c.action == "run.privacy_override")
    ).scalar_one()
    count = session.scalar
    return Facts(
        generated_at=now.isoformat(timespec="seconds"),
        **audit,
        users=count(select(func.count()).select_from(User).where(humans)) or 0,
        admins=count(select(func.count()).select_from(User).where(humans, User.is_admin)) or 0,
        users_with_password=count(
            select(func.count()).select_from(User).where(humans, User.password_hash.is_not(None))
        )
        or 0,
        active_tokens=count(select(func.count()).select_from(ApiToken).where(active)) or 0,
        human_tokens_without_expiry=count(
            select(func.count())
            .select_from(ApiToken)
            .join(User, User.id == ApiToken.user_id)
            .where(humans, ApiToken.revoked_at.is_(None), ApiToken.expires_at.is_(None))
        )
        or 0,
        dataset_versions=counts["versions"],
        personal_data_versions=counts["personal"],
        personal_data_signed=counts["personal_signed"],
        versions_signed=counts["signed"],
        datasets=datasets,
        model_versions=len(models),
        models_signed=sum(bool(m.signature) for m in models),
        models_private=sum(m.evidence.get("epsilon") is not None for m in models),
        models_audited=sum(m.id in audited for m in models),
        production_versions=len(production),
        production_approved=sum(m.id in approved for m in production),
        privacy_overrides=overrides,
        open_alerts=count(
            select(func.count()).select_from(Alert).where(Alert.acknowledged_at.is_(None))
        )
        or 0,
        erasure_requests=count(select(func.count()).select_from(ErasureRequest)) or 0,
        transport=transport,
        runs_sandboxed=count(
            select(func.count()).select_from(Run).where(Run.isolation == "bubblewrap")
        )
        or 0,
        runs_unsandboxed=count(select(func.count()).select_from(Run).where(Run.isolation == "none"))
        or 0,
        clusters_unsandboxed=sorted(
            session.scalars(select(Cluster.name).where(Cluster.isolation == "none"))
        ),
    )
