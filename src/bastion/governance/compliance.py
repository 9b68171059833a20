"""Compliance reports built from evidence the system holds, control by control.

The control plane gathers facts (:class:`Facts`: audit chain state, identities and tokens,
dataset and model versions, alerts, the transport of the request) and this module turns
them into a HIPAA 164.312 or GDPR report: each control says pass, fail or manual, cites the
evidence, and, when it fails, what to fix. Rendered as JSON, Markdown or one HTML page.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from bastion.templates import render

__all__ = ["FRAMEWORKS", "Control", "Facts", "build_report", "render_report"]

FRAMEWORKS = ("hipaa", "gdpr")
Status = Literal["pass", "fail", "manual"]


class Facts(BaseModel):
    """What the control plane knows, as counts and short descriptions (no personal data)."""

    model_config = ConfigDict(extra="forbid")

    generated_at: str
    audit_ok: bool
    audit_events: int
    audit_head_seq: int | None
    audit_last_checkpoint_seq: int | None
    audit_problem: str = ""
    users: int
    admins: int
    users_with_password: int
    active_tokens: int
    human_tokens_without_expiry: int
    dataset_versions: int
    personal_data_versions: int
    personal_data_signed: int
    versions_signed: int
    datasets: list[dict[str, Any]]
    model_versions: int
    models_signed: int
    models_private: int
    models_audited: int
    production_versions: int
    production_approved: int
    privacy_overrides: int
    open_alerts: int
    erasure_requests: int = 0
    transport: str
    #: Runs whose every attempt ran in the sandbox / with any attempt unsandboxed.
    runs_sandboxed: int = 0
    runs_unsandboxed: int = 0
    #: Clusters whose agent runs jobs with --no-sandbox.
    clusters_unsandboxed: list[str] = []


class Control(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    title: str
    status: Status
    evidence: list[str]
    fix: str = ""


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole}"


def _audit(facts: Facts, control: str, title: str) -> Control:
    if facts.audit_ok:
        return Control(
            id=control,
            title=title,
            status="pass",
            evidence=[
                f"audit chain verified: {facts.audit_events} events up to seq "
                f"{facts.audit_head_seq}; last signed checkpoint at seq "
                f"{facts.audit_last_checkpoint_seq}",
                "every change and every refused request is an audit event in the same "
                "transaction (access.denied, alerts)",
            ],
        )
    return Control(
        id=control,
        title=title,
        status="fail",
        evidence=[f"audit chain verification failed: {facts.audit_problem}"],
        fix="investigate the named event (bastion audit verify); restore from a verified export",
    )


def _integrity(facts: Facts, control: str, title: str) -> Control:
    ok = (
        facts.personal_data_signed == facts.personal_data_versions
        and facts.versions_signed == facts.dataset_versions
        and facts.models_signed == facts.model_versions
    )
    return Control(
        id=control,
        title=title,
        status="pass" if ok else "fail",
        evidence=[
            f"{_share(facts.personal_data_signed, facts.personal_data_versions)} dataset "
            "versions with personal data encrypted and signed",
            f"{_share(facts.versions_signed, facts.dataset_versions)} dataset versions signed; "
            f"{_share(facts.models_signed, facts.model_versions)} model versions signed",
            "every use verifies the signature and every file's hash first",
        ],
        fix="" if ok else "re-register the unsigned versions through an agent (it seals them)",
    )


def _transport(facts: Facts, control: str, title: str) -> Control:
    secure = facts.transport == "https"
    return Control(
        id=control,
        title=title,
        status="pass" if secure else "fail",
        evidence=[f"this report was requested over {facts.transport}"],
        fix=""
        if secure
        else "start the control plane with --tls-cert/--tls-key; agents and clients then "
        "connect over HTTPS (see docs/operations.md)",
    )


def _sandboxed(facts: Facts) -> bool:
    return facts.runs_unsandboxed == 0 and not facts.clusters_unsandboxed


def _isolation_evidence(facts: Facts) -> str:
    runs = facts.runs_sandboxed + facts.runs_unsandboxed
    line = (
        f"{_share(facts.runs_sandboxed, runs)} runs sandboxed (bubblewrap: no network, no keys, "
        "only their own files)"
    )
    if facts.clusters_unsandboxed:
        line += f"; clusters running jobs UNSANDBOXED: {', '.join(facts.clusters_unsandboxed)}"
    return line


_ISOLATION_FIX = (
    "restart the agents of these clusters without --no-sandbox (install bubblewrap); runs "
    "that ran unsandboxed stay recorded"
)


def _hipaa(facts: Facts) -> list[Control]:
    expiring = facts.human_tokens_without_expiry == 0
    sandboxed = _sandboxed(facts)
    return [
        Control(
            id="164.312(a)(1)",
            title="Access control",
            status="pass" if sandboxed else "fail",
            evidence=[
                f"{facts.users} unique identities ({facts.admins} admins); roles per project, "
                "one permission table checked on every route",
                f"{_share(facts.personal_data_versions, facts.personal_data_versions)} dataset "
                "versions with personal data encrypted at rest (envelope encryption)",
                f"{facts.open_alerts} open insider-threat alert(s)",
                _isolation_evidence(facts),
            ],
            fix="" if sandboxed else _ISOLATION_FIX,
        ),
        _audit(facts, "164.312(b)", "Audit controls"),
        _integrity(facts, "164.312(c)(1)", "Integrity"),
        Control(
            id="164.312(d)",
            title="Person or entity authentication",
            status="pass" if expiring else "fail",
            evidence=[
                f"{facts.users_with_password} passwords hashed with argon2; tokens stored "
                "hashed, scoped, revocable; logins throttled",
                f"{facts.active_tokens} active tokens, "
                f"{facts.human_tokens_without_expiry} of people's without expiry",
            ],
            fix=""
            if expiring
            else "revoke people's tokens that never expire and mint them with --expires",
        ),
        _transport(facts, "164.312(e)(1)", "Transmission security"),
    ]


def _gdpr(facts: Facts) -> list[Control]:
    without_purpose = [d["dataset"] for d in facts.datasets if not d["purpose"]]
    personal = [d for d in facts.datasets if d["personal_data"]]
    without_subject = [d["dataset"] for d in personal if not d["subject_id_column"]]
    secure = (
        facts.audit_ok
        and facts.transport == "https"
        and (facts.versions_signed == facts.dataset_versions)
        and _sandboxed(facts)
    )
    return [
        Control(
            id="Art. 5",
            title="Principles (purpose limitation, minimisation, integrity, confidentiality)",
            status="fail" if without_purpose else "pass",
            evidence=[
                f"{len(facts.datasets) - len(without_purpose)}/{len(facts.datasets)} datasets "
                "declare a purpose",
                f"{facts.privacy_overrides} audited override(s) of the privacy gate (identifier "
                "columns as features)",
            ],
            fix=f"declare a purpose for: {', '.join(without_purpose)}" if without_purpose else "",
        ),
        Control(
            id="Art. 17",
            title="Right to erasure",
            status="fail" if without_subject else "pass",
            evidence=[
                f"{len(personal) - len(without_subject)}/{len(personal)} datasets with personal "
                "data declare their subject-id column (erasure can find a subject's rows)",
                f"{facts.erasure_requests} erasure request(s) recorded (bastion privacy erase): "
                "new versions without the subject, old versions' keys shredded unless held, "
                "models trained on them flagged; the subject kept only as a keyed pseudonym",
            ],
            fix=f"register these with --subject-id-column: {', '.join(without_subject)}"
            if without_subject
            else "",
        ),
        Control(
            id="Art. 25",
            title="Data protection by design and by default",
            status="pass",
            evidence=[
                "authentication on by default; data stays in the compute plane; only aggregates "
                "cross to the control plane",
                "identifier columns refused as features unless an audited override names them",
                f"{_share(facts.models_private, facts.model_versions)} model versions trained "
                "with differential privacy",
            ],
        ),
        Control(
            id="Art. 30",
            title="Records of processing activities",
            status="fail" if without_purpose else "pass",
            evidence=[
                f"{d['dataset']}: purpose {d['purpose'] or 'NOT DECLARED'}; categories "
                f"{', '.join(d['categories']) or 'none found'}; accessed by "
                f"{', '.join(d['accessed_by']) or 'nobody yet'}"
                for d in facts.datasets
            ]
            or ["no datasets registered"],
            fix=f"declare a purpose for: {', '.join(without_purpose)}" if without_purpose else "",
        ),
        Control(
            id="Art. 32",
            title="Security of processing",
            status="pass" if secure else "fail",
            evidence=[
                f"{_share(facts.versions_signed, facts.dataset_versions)} dataset versions "
                "encrypted and signed at rest",
                "audit chain verified" if facts.audit_ok else "audit chain broken",
                f"transport: {facts.transport}",
                _isolation_evidence(facts),
            ],
            fix=""
            if secure
            else "serve the control plane over TLS, keep every version sealed and the "
            "audit chain intact, and run every job in the sandbox (no --no-sandbox)",
        ),
        Control(
            id="Art. 35",
            title="Data protection impact assessment",
            status="manual",
            evidence=[
                f"{_share(facts.models_audited, facts.model_versions)} model versions with a "
                "membership-inference audit; model cards and OWASP ML scorecards for each",
                f"{_share(facts.production_approved, facts.production_versions)} production "
                "versions promoted through policy gates and approval",
            ],
            fix="a DPIA is a documented assessment by the controller; attach the model cards",
        ),
    ]


def build_report(framework: str, facts: Facts) -> dict[str, Any]:
    """The report as a mapping: framework, generation time, controls, and a tally."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; known: {', '.join(FRAMEWORKS)}")
    controls = _hipaa(facts) if framework == "hipaa" else _gdpr(facts)
    tally = {
        status: sum(c.status == status for c in controls) for status in ("pass", "fail", "manual")
    }
    return {
        "format": "bastion-compliance/1",
        "framework": framework,
        "title": "HIPAA Security Rule 164.312 (technical safeguards)"
        if framework == "hipaa"
        else "GDPR (Articles 5, 17, 25, 30, 32, 35)",
        "generated_at": facts.generated_at,
        "summary": tally,
        "controls": [c.model_dump() for c in controls],
    }


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# {report['title']}",
        "",
        f"Generated {report['generated_at']} by Bastion from the evidence it holds. "
        f"{report['summary']['pass']} pass, {report['summary']['fail']} fail, "
        f"{report['summary']['manual']} manual.",
        "",
    ]
    for control in report["controls"]:
        lines += [f"## {control['id']} {control['title']}: **{control['status']}**", ""]
        lines += [f"- {item}" for item in control["evidence"]]
        if control["fix"]:
            lines += ["", f"To fix: {control['fix']}"]
        lines.append("")
    return "\n".join(lines)


def render_report(report: dict[str, Any], fmt: str) -> str:
    """``json``, ``md`` or ``html`` (self-contained, escaped, no script)."""
    if fmt == "json":
        return json.dumps(report, indent=2)
    if fmt == "md":
        return _markdown(report)
    if fmt == "html":
        return render("bastion.governance", "report.html.j2", report=report)
    raise ValueError(f"unknown format {fmt!r}: json, md or html")
