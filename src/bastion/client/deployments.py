"""Deployments, their serving keys, and the calls of the serve job."""

from __future__ import annotations

from typing import Any

from bastion.api.deployments import DeploymentOut, NewServingKeyOut, ServingKeyOut
from bastion.client.serving import ServingJobMixin

__all__ = ["DeploymentsMixin"]


class DeploymentsMixin(ServingJobMixin):
    """Part of :class:`bastion.client.Client`."""

    def _deployments(self, project: str) -> str:
        return f"/api/v1/projects/{project}/deployments"

    def create_deployment(self, project: str, **body: Any) -> DeploymentOut:
        """Ask a cluster's agent to serve a model version (``body``: the deployment's fields)."""
        return self._one(DeploymentOut, "POST", self._deployments(project), json=body)

    def list_deployments(self, project: str) -> list[DeploymentOut]:
        return self._many(DeploymentOut, "GET", self._deployments(project))

    def get_deployment(self, project: str, name: str) -> DeploymentOut:
        return self._one(DeploymentOut, "GET", f"{self._deployments(project)}/{name}")

    def update_deployment(
        self, project: str, name: str, *, model: str, allow_unapproved: bool = False
    ) -> DeploymentOut:
        return self._one(
            DeploymentOut,
            "POST",
            f"{self._deployments(project)}/{name}/update",
            json={"model": model, "allow_unapproved": allow_unapproved},
        )

    def rollback_deployment(self, project: str, name: str) -> DeploymentOut:
        return self._one(DeploymentOut, "POST", f"{self._deployments(project)}/{name}/rollback")

    def stop_deployment(self, project: str, name: str) -> DeploymentOut:
        return self._one(DeploymentOut, "POST", f"{self._deployments(project)}/{name}/stop")

    def create_serving_key(self, project: str, deployment: str, **body: Any) -> NewServingKeyOut:
        """Mint a serving key; its secret (``token``) is in this answer only."""
        return self._one(
            NewServingKeyOut, "POST", f"{self._deployments(project)}/{deployment}/keys", json=body
        )

    def list_serving_keys(self, project: str, deployment: str) -> list[ServingKeyOut]:
        return self._many(ServingKeyOut, "GET", f"{self._deployments(project)}/{deployment}/keys")

    def revoke_serving_key(self, project: str, deployment: str, key_id: str) -> ServingKeyOut:
        return self._one(
            ServingKeyOut,
            "POST",
            f"{self._deployments(project)}/{deployment}/keys/{key_id}/revoke",
        )
