"""Registered models: versions, evaluations, model cards, export and import."""

from __future__ import annotations

from typing import Any

from bastion.api.models import EvaluationOut, ModelOut, ModelVersionOut
from bastion.api.runs import RunOut
from bastion.client._transport import Transport

__all__ = ["ModelsMixin"]


class ModelsMixin(Transport):
    """Part of :class:`bastion.client.Client`."""

    def _models(self, project: str) -> str:
        return f"/api/v1/projects/{project}/models"

    def list_models(self, project: str) -> list[ModelOut]:
        return self._many(ModelOut, "GET", self._models(project))

    def model_versions(self, project: str, name: str) -> list[ModelVersionOut]:
        return self._many(ModelVersionOut, "GET", f"{self._models(project)}/{name}/versions")

    def model_version(self, project: str, name: str, version: int) -> ModelVersionOut:
        return self._one(
            ModelVersionOut, "GET", f"{self._models(project)}/{name}/versions/{version}"
        )

    def verify_model(self, project: str, name: str, version: int) -> RunOut:
        """Queue the check of a sealed model on its cluster; returns the run."""
        return self._one(
            RunOut, "POST", f"{self._models(project)}/{name}/versions/{version}/verify"
        )

    def export_model(self, project: str, name: str, version: int, *, to_cluster: str) -> RunOut:
        """Queue the transfer file for ``to_cluster``; returns the run."""
        return self._one(
            RunOut,
            "POST",
            f"{self._models(project)}/{name}/versions/{version}/export",
            json={"to_cluster": to_cluster},
        )

    def import_model(self, project: str, name: str, *, cluster: str, source: str) -> RunOut:
        """Queue the import of a transfer file on ``cluster``; returns the run."""
        return self._one(
            RunOut,
            "POST",
            f"{self._models(project)}/{name}/import",
            json={"cluster": cluster, "source": source},
        )

    def evaluate_model(
        self, project: str, name: str, version: int, evaluate: dict[str, Any]
    ) -> RunOut:
        """Queue an evaluation (an ``evaluate`` block) of a version; returns the run."""
        return self._one(
            RunOut,
            "POST",
            f"{self._models(project)}/{name}/versions/{version}/evaluate",
            json={"evaluate": evaluate},
        )

    def model_evaluations(self, project: str, name: str, version: int) -> list[EvaluationOut]:
        """Every evaluation of the version, oldest first (the newest of each kind is current)."""
        return self._many(
            EvaluationOut, "GET", f"{self._models(project)}/{name}/versions/{version}/evaluations"
        )

    def model_card(self, project: str, name: str, version: int) -> dict[str, Any]:
        """The model card as JSON, with the OWASP ML Top 10 scorecard.

        A plain dict: the route declares no response model (the card's sections follow
        the evidence the version holds)."""
        card: dict[str, Any] = self.request(
            "GET", f"{self._models(project)}/{name}/versions/{version}/card"
        )
        return card

    def model_card_html(self, project: str, name: str, version: int) -> str:
        """The model card as one self-contained HTML page."""
        return self.response(
            "GET", f"{self._models(project)}/{name}/versions/{version}/card.html"
        ).text

    def record_model_version(
        self, project: str, name: str, body: dict[str, Any]
    ) -> ModelVersionOut:
        """(Agent) record the model version sealed for a training run."""
        return self._one(
            ModelVersionOut, "POST", f"{self._models(project)}/{name}/versions", json=body
        )
