"""The serve job's calls: its deployment's key records, and its audit deliveries."""

from __future__ import annotations

from typing import Any

from bastion.client._transport import Transport

__all__ = ["ServingJobMixin"]


class ServingJobMixin(Transport):
    """Part of :class:`bastion.client.Client` (through the deployments' calls), and of the
    job's own client: no resource models to import."""

    def serving_keys(self, project: str, run_id: str) -> list[dict[str, Any]]:
        """(Serve job) its deployment's key records: hashes and limits, never secrets.

        Plain dicts: the route declares no response model (the records are the serve job's
        own format, read by ``bastion.inference``)."""
        records: list[dict[str, Any]] = self.request(
            "GET", f"/api/v1/projects/{project}/runs/{run_id}/serving-keys"
        )
        return records

    def serving_audit(
        self,
        project: str,
        run_id: str,
        *,
        events: list[dict[str, Any]],
        findings: list[dict[str, Any]] | None = None,
    ) -> None:
        """(Serve job) deliver request events (to the audit log) and findings (to alerts)."""
        self.request(
            "POST",
            f"/api/v1/projects/{project}/runs/{run_id}/serving-audit",
            json={"events": events, "findings": findings or []},
        )
