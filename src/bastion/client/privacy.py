"""Data subjects' erasure (GDPR Art. 17) and retention holds."""

from __future__ import annotations

from bastion.api.datasets import DatasetVersionOut, ErasureOut
from bastion.client._transport import Transport

__all__ = ["PrivacyMixin"]


class PrivacyMixin(Transport):
    """Part of :class:`bastion.client.Client`."""

    def request_erasure(
        self, project: str, *, subject_id: str, reason: str, locate: bool = False
    ) -> ErasureOut:
        """GDPR Art. 17: queue the erasure of a data subject from every dataset version
        (``locate``: only find where the subject is)."""
        return self._one(
            ErasureOut,
            "POST",
            f"/api/v1/projects/{project}/privacy/erasures",
            json={"subject_id": subject_id, "reason": reason, "locate": locate},
        )

    def erasures(self, project: str) -> list[ErasureOut]:
        """The project's erasure and locate requests, newest first."""
        return self._many(ErasureOut, "GET", f"/api/v1/projects/{project}/privacy/erasures")

    def erasure(self, project: str, erasure_id: str) -> ErasureOut:
        return self._one(
            ErasureOut, "GET", f"/api/v1/projects/{project}/privacy/erasures/{erasure_id}"
        )

    def set_hold(self, project: str, name: str, version: int, reason: str) -> DatasetVersionOut:
        """Set (or with an empty reason release) a retention hold on a dataset version."""
        return self._one(
            DatasetVersionOut,
            "PUT",
            f"/api/v1/projects/{project}/datasets/{name}/versions/{version}/hold",
            json={"reason": reason},
        )
