"""The audit log, insider-threat alerts and compliance reports."""

from __future__ import annotations

from bastion.api.audit import AuditEventOut, AuditVerifyOut
from bastion.api.governance import AlertOut
from bastion.client._transport import Transport

__all__ = ["AuditMixin"]


class AuditMixin(Transport):
    """Part of :class:`bastion.client.Client`."""

    def audit_events(self, limit: int = 100) -> list[AuditEventOut]:
        """The most recent events, oldest first."""
        return self._many(AuditEventOut, "GET", "/api/v1/audit/events", params={"limit": limit})

    def verify_audit(self) -> AuditVerifyOut:
        """Verify the whole chain (a broken chain raises ``AuditChainError``)."""
        return self._one(AuditVerifyOut, "GET", "/api/v1/audit/verify")

    def list_alerts(self, *, include_acknowledged: bool = False) -> list[AlertOut]:
        return self._many(
            AlertOut, "GET", "/api/v1/alerts", params={"all": str(include_acknowledged).lower()}
        )

    def acknowledge_alert(self, alert_id: str, note: str = "") -> AlertOut:
        return self._one(
            AlertOut, "POST", f"/api/v1/alerts/{alert_id}/acknowledge", json={"comment": note}
        )

    def compliance_report(self, framework: str, fmt: str = "json") -> str:
        """The HIPAA or GDPR report as JSON, Markdown or HTML text."""
        response = self.response(
            "GET", "/api/v1/compliance/report", params={"framework": framework, "format": fmt}
        )
        return response.text
