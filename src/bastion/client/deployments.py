"""Deployments, their serving keys, and the calls of the serve job."""

from __future__ import annotations

from typing import Any

from bastion.api.deployments import DeploymentOut, NewServingKeyOut, ServingKeyOut
from bastion.client._transport import Transport

__all__ = ["DeploymentsMixin"]


class DeploymentsMixin(Transport):
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

    # -- the serve job ----------------------------------------------------------------------

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
