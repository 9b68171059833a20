"""Promotion of model versions (gates, approvals, stages), policies and lineage."""

from __future__ import annotations

from typing import Any

from bastion.api.governance import ApprovalOut, PolicyOut, StageTransitionOut
from bastion.api.models import ModelVersionOut
from bastion.client._transport import Transport

__all__ = ["GovernanceMixin"]


class GovernanceMixin(Transport):
    """Part of :class:`bastion.client.Client`."""

    def _version(self, project: str, name: str, version: int) -> str:
        return f"/api/v1/projects/{project}/models/{name}/versions/{version}"

    def promote_model(
        self, project: str, name: str, version: int, *, to: str, policy: str | None = None
    ) -> ApprovalOut:
        """Evaluate the policy's gates; the approval request (``failed`` if a gate failed)."""
        body: dict[str, Any] = {"to": to} if policy is None else {"to": to, "policy": policy}
        return self._one(
            ApprovalOut, "POST", f"{self._version(project, name, version)}/promote", json=body
        )

    def approve_model(
        self, project: str, name: str, version: int, comment: str = ""
    ) -> ApprovalOut:
        return self._one(
            ApprovalOut,
            "POST",
            f"{self._version(project, name, version)}/approve",
            json={"comment": comment},
        )

    def reject_model(self, project: str, name: str, version: int, comment: str = "") -> ApprovalOut:
        return self._one(
            ApprovalOut,
            "POST",
            f"{self._version(project, name, version)}/reject",
            json={"comment": comment},
        )

    def archive_model(
        self, project: str, name: str, version: int, reason: str = ""
    ) -> ModelVersionOut:
        return self._one(
            ModelVersionOut,
            "POST",
            f"{self._version(project, name, version)}/archive",
            json={"comment": reason},
        )

    def rollback_model(
        self, project: str, name: str, *, to_version: int, reason: str = ""
    ) -> ModelVersionOut:
        """Put back in production a version approved for production before."""
        return self._one(
            ModelVersionOut,
            "POST",
            f"/api/v1/projects/{project}/models/{name}/rollback",
            json={"to_version": to_version, "reason": reason},
        )

    def model_history(self, project: str, name: str) -> list[StageTransitionOut]:
        """Every stage change of the model's versions, oldest first."""
        return self._many(
            StageTransitionOut, "GET", f"/api/v1/projects/{project}/models/{name}/history"
        )

    def lineage(self, project: str, node: str) -> dict[str, Any]:
        """The lineage graph around ``dataset:NAME@V``, ``model:NAME@V`` or ``run:ID``:
        ``nodes`` and ``edges``.

        A plain dict: the route declares no response model."""
        graph: dict[str, Any] = self.request(
            "GET", f"/api/v1/projects/{project}/lineage", params={"node": node}
        )
        return graph

    def list_approvals(self, project: str) -> list[ApprovalOut]:
        return self._many(ApprovalOut, "GET", f"/api/v1/projects/{project}/approvals")

    def put_policy(self, project: str, name: str, document: dict[str, Any]) -> PolicyOut:
        return self._one(
            PolicyOut,
            "PUT",
            f"/api/v1/projects/{project}/policies/{name}",
            json={"document": document},
        )

    def list_policies(self, project: str) -> list[PolicyOut]:
        return self._many(PolicyOut, "GET", f"/api/v1/projects/{project}/policies")
