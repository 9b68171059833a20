"""A federated run's job's calls: what it tells the other participants, and reads of them."""

from __future__ import annotations

from typing import Any

from bastion.api.runs import FederationOut
from bastion.client._transport import Transport

__all__ = ["FederationJobMixin"]


class FederationJobMixin(Transport):
    """Part of :class:`bastion.client.Client` and of the job's own client."""

    def federation(self, project: str, run_id: str) -> FederationOut:
        """(Federated job) its view of the federation: the run's status and, for a site, the
        aggregator's address and CA certificate; for the aggregator, each site's key."""
        return self._one(
            FederationOut, "GET", f"/api/v1/projects/{project}/runs/{run_id}/federation"
        )

    def join_federation(self, project: str, run_id: str, **public: Any) -> FederationOut:
        """(Federated job) post its public material (``address`` and ``certificate``, or
        ``public_key``), or (aggregator) ``refused``: fingerprints of keys its SuperLink
        refused; the view after it."""
        return self._one(
            FederationOut,
            "POST",
            f"/api/v1/projects/{project}/runs/{run_id}/federation",
            json=public,
        )
