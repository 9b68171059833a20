"""The governance half of the SDK: promotion, policies, lineage, privacy, alerts, audit."""

from __future__ import annotations

from typing import Any

from bastion.client_base import Calls

__all__ = ["GovernanceMixin"]


class GovernanceMixin(Calls):
    """Mixed into :class:`bastion.client.Client` (which provides the calls)."""

    # -- governance ------------------------------------------------------------------------

    def _version_action(
        self, project: str, name: str, version: int, action: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST",
            f"/api/v1/projects/{project}/models/{name}/versions/{version}/{action}",
            json=body,
        )
        return result

    def promote_model(
        self, project: str, name: str, version: int, *, to: str, policy: str | None = None
    ) -> dict[str, Any]:
        """Evaluate the policy's gates; the approval request (``failed`` if a gate failed)."""
        body: dict[str, Any] = {"to": to} if policy is None else {"to": to, "policy": policy}
        return self._version_action(project, name, version, "promote", body)

    def approve_model(self, project: str, name: str, version: int, comment: str = "") -> Any:
        return self._version_action(project, name, version, "approve", {"comment": comment})

    def reject_model(self, project: str, name: str, version: int, comment: str = "") -> Any:
        return self._version_action(project, name, version, "reject", {"comment": comment})

    def archive_model(self, project: str, name: str, version: int, reason: str = "") -> Any:
        return self._version_action(project, name, version, "archive", {"comment": reason})

    def rollback_model(
        self, project: str, name: str, *, to_version: int, reason: str = ""
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST",
            f"/api/v1/projects/{project}/models/{name}/rollback",
            json={"to_version": to_version, "reason": reason},
        )
        return result

    def model_history(self, project: str, name: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/v1/projects/{project}/models/{name}/history"
        )
        return result

    def lineage(self, project: str, node: str) -> dict[str, Any]:
        """The lineage graph around ``dataset:NAME@V``, ``model:NAME@V`` or ``run:ID``."""
        result: dict[str, Any] = self.request(
            "GET", f"/api/v1/projects/{project}/lineage", params={"node": node}
        )
        return result

    def list_approvals(self, project: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"/api/v1/projects/{project}/approvals")
        return result

    def put_policy(self, project: str, name: str, document: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PUT", f"/api/v1/projects/{project}/policies/{name}", json={"document": document}
        )
        return result

    def list_policies(self, project: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"/api/v1/projects/{project}/policies")
        return result

    def request_erasure(
        self, project: str, *, subject_id: str, reason: str, locate: bool = False
    ) -> dict[str, Any]:
        """GDPR Art. 17: queue the erasure of a data subject from every dataset version
        (``locate``: only find where the subject is)."""
        result: dict[str, Any] = self.request(
            "POST",
            f"/api/v1/projects/{project}/privacy/erasures",
            json={"subject_id": subject_id, "reason": reason, "locate": locate},
        )
        return result

    def erasures(self, project: str) -> list[dict[str, Any]]:
        """The project's erasure and locate requests, newest first."""
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/v1/projects/{project}/privacy/erasures"
        )
        return result

    def erasure(self, project: str, erasure_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "GET", f"/api/v1/projects/{project}/privacy/erasures/{erasure_id}"
        )
        return result

    def set_hold(self, project: str, name: str, version: int, reason: str) -> dict[str, Any]:
        """Set (or with an empty reason release) a retention hold on a dataset version."""
        result: dict[str, Any] = self.request(
            "PUT",
            f"/api/v1/projects/{project}/datasets/{name}/versions/{version}/hold",
            json={"reason": reason},
        )
        return result

    def compliance_report(self, framework: str, fmt: str = "json") -> str:
        """The HIPAA or GDPR report as JSON, Markdown or HTML text."""
        response = self.response(
            "GET", "/api/v1/compliance/report", params={"framework": framework, "format": fmt}
        )
        return response.text

    def list_alerts(self, *, include_acknowledged: bool = False) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", "/api/v1/alerts", params={"all": str(include_acknowledged).lower()}
        )
        return result

    def acknowledge_alert(self, alert_id: str, note: str = "") -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/alerts/{alert_id}/acknowledge", json={"comment": note}
        )
        return result

    # -- audit ---------------------------------------------------------------------------

    def audit_events(self, limit: int = 100) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", "/api/v1/audit/events", params={"limit": limit}
        )
        return result

    def verify_audit(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/api/v1/audit/verify")
        return result
