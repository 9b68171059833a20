"""The deployment half of the SDK: deployments, serving keys, and the serve job's calls."""

from __future__ import annotations

from typing import Any

from bastion.client_base import Calls

__all__ = ["DeploymentsMixin"]


class DeploymentsMixin(Calls):
    """Mixed into :class:`bastion.client.Client` (which provides the calls)."""

    def create_deployment(self, project: str, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/projects/{project}/deployments", json=body
        )
        return result

    def list_deployments(self, project: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/v1/projects/{project}/deployments"
        )
        return result

    def get_deployment(self, project: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "GET", f"/api/v1/projects/{project}/deployments/{name}"
        )
        return result

    def update_deployment(
        self, project: str, name: str, *, model: str, allow_unapproved: bool = False
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST",
            f"/api/v1/projects/{project}/deployments/{name}/update",
            json={"model": model, "allow_unapproved": allow_unapproved},
        )
        return result

    def rollback_deployment(self, project: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/projects/{project}/deployments/{name}/rollback"
        )
        return result

    def stop_deployment(self, project: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/projects/{project}/deployments/{name}/stop"
        )
        return result

    def create_serving_key(self, project: str, deployment: str, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/projects/{project}/deployments/{deployment}/keys", json=body
        )
        return result

    def list_serving_keys(self, project: str, deployment: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/v1/projects/{project}/deployments/{deployment}/keys"
        )
        return result

    def revoke_serving_key(self, project: str, deployment: str, key_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/projects/{project}/deployments/{deployment}/keys/{key_id}/revoke"
        )
        return result

    # -- the serve job ----------------------------------------------------------------------

    def serving_keys(self, project: str, run_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/v1/projects/{project}/runs/{run_id}/serving-keys"
        )
        return result

    def serving_audit(
        self,
        project: str,
        run_id: str,
        *,
        events: list[dict[str, Any]],
        findings: list[dict[str, Any]] | None = None,
    ) -> None:
        self.request(
            "POST",
            f"/api/v1/projects/{project}/runs/{run_id}/serving-audit",
            json={"events": events, "findings": findings or []},
        )
