"""Datasets: versions (metadata only), and the data jobs that run where the data is."""

from __future__ import annotations

from typing import Any

from bastion.api.datasets import DatasetOut, DatasetVersionOut
from bastion.api.runs import RunOut
from bastion.client._transport import Transport

__all__ = ["DatasetsMixin"]


class DatasetsMixin(Transport):
    """Part of :class:`bastion.client.Client`."""

    def _datasets(self, project: str) -> str:
        return f"/api/v1/projects/{project}/datasets"

    def list_datasets(self, project: str) -> list[DatasetOut]:
        return self._many(DatasetOut, "GET", self._datasets(project))

    def dataset_versions(self, project: str, name: str) -> list[DatasetVersionOut]:
        return self._many(DatasetVersionOut, "GET", f"{self._datasets(project)}/{name}/versions")

    def dataset_version(self, project: str, name: str, version: int) -> DatasetVersionOut:
        return self._one(
            DatasetVersionOut, "GET", f"{self._datasets(project)}/{name}/versions/{version}"
        )

    def register_dataset(
        self,
        project: str,
        name: str,
        *,
        cluster: str,
        source: str,
        target: str | None = None,
        subject_id_column: str | None = None,
        purpose: str = "",
        sha256: str | None = None,
        size: int | None = None,
    ) -> RunOut:
        """Queue the registration; returns the run that performs it on the cluster.

        ``sha256`` and ``size`` pin the file as it was when submitted: the agent refuses
        to register it if it has changed by the time the job reads it."""
        body = {
            "cluster": cluster,
            "source": source,
            "target": target,
            "subject_id_column": subject_id_column,
            "purpose": purpose,
            "sha256": sha256,
            "size": size,
        }
        return self._one(RunOut, "POST", f"{self._datasets(project)}/{name}/register", json=body)

    def dataset_job(
        self, project: str, name: str, version: int, kind: str, body: dict[str, Any] | None = None
    ) -> RunOut:
        """Queue ``verify``, ``scan`` or ``pseudonymize`` on a version; returns the run."""
        return self._one(
            RunOut,
            "POST",
            f"{self._datasets(project)}/{name}/versions/{version}/{kind}",
            json=body or {},
        )

    def edit_dataset_schema(
        self, project: str, name: str, version: int, schema: dict[str, Any]
    ) -> DatasetVersionOut:
        return self._one(
            DatasetVersionOut,
            "PUT",
            f"{self._datasets(project)}/{name}/versions/{version}/schema",
            json={"schema": schema},
        )

    def record_dataset_version(
        self, project: str, name: str, body: dict[str, Any]
    ) -> DatasetVersionOut:
        """(Agent) record the version sealed for a run."""
        return self._one(
            DatasetVersionOut, "POST", f"{self._datasets(project)}/{name}/versions", json=body
        )
