"""Clusters, and the agent protocol: join, heartbeat, lease."""

from __future__ import annotations

from typing import Any

from bastion.api.clusters import (
    Capacity,
    ClusterOut,
    HeartbeatOut,
    JoinOut,
    JoinTokenOut,
    LeaseOut,
    NewClusterOut,
)
from bastion.client._transport import Transport

__all__ = ["ClustersMixin"]


class ClustersMixin(Transport):
    """Part of :class:`bastion.client.Client`."""

    def create_cluster(self, name: str, *, description: str = "") -> NewClusterOut:
        """Register a cluster; its one-time ``join_token`` is in this answer only."""
        return self._one(
            NewClusterOut,
            "POST",
            "/api/v1/clusters",
            json={"name": name, "description": description},
        )

    def new_join_token(self, cluster: str, *, hours: int = 24) -> JoinTokenOut:
        """A fresh one-time join token for ``cluster``'s agent (to join again or at last)."""
        return self._one(
            JoinTokenOut,
            "POST",
            f"/api/v1/clusters/{cluster}/join-token",
            json={"hours": hours},
        )

    def list_clusters(self) -> list[ClusterOut]:
        return self._many(ClusterOut, "GET", "/api/v1/clusters")

    def get_cluster(self, cluster: str) -> ClusterOut:
        return self._one(ClusterOut, "GET", f"/api/v1/clusters/{cluster}")

    # -- the agent protocol ----------------------------------------------------------------

    def join_cluster(
        self, cluster: str, *, join_token: str, signing_public_key: str, hybrid_public_keyset: str
    ) -> JoinOut:
        """(Agent) exchange the one-time join token for the agent's own credential."""
        return self._one(
            JoinOut,
            "POST",
            "/api/v1/agents/join",
            json={
                "cluster": cluster,
                "join_token": join_token,
                "signing_public_key": signing_public_key,
                "hybrid_public_keyset": hybrid_public_keyset,
            },
        )

    def heartbeat(
        self,
        cluster: str,
        runs: dict[str, int],
        *,
        stopping: bool = False,
        isolation: str | None = None,
        capacity: Capacity | None = None,
    ) -> HeartbeatOut:
        """(Agent) the runs to stop (``stop``) and the model each serve run should serve
        (``serve``); ``stopping`` says the agent is leaving (recorded as its disconnection);
        ``isolation`` how it runs jobs (``bubblewrap`` or ``none``); ``capacity`` what its
        host can give jobs (CPUs, memory, GPUs), which placement reads."""
        body: dict[str, Any] = {"runs": runs, "stopping": True} if stopping else {"runs": runs}
        if isolation is not None:
            body["isolation"] = isolation
        if capacity is not None:
            body["capacity"] = capacity.model_dump(mode="json")
        return self._one(HeartbeatOut, "POST", f"/api/v1/clusters/{cluster}/heartbeat", json=body)

    def lease(
        self,
        cluster: str,
        *,
        wait: float,
        isolation: str | None = None,
        free_gpus: int | None = None,
    ) -> LeaseOut | None:
        """(Agent) long-poll for work; None when nothing arrived within ``wait`` seconds.
        ``isolation`` is how the agent will run it, recorded on the run; ``free_gpus`` how
        many GPUs it has not given to running jobs (a GPU run waits for them)."""
        params: dict[str, Any] = {"wait": wait}
        if isolation is not None:
            params["isolation"] = isolation
        if free_gpus is not None:
            params["free_gpus"] = free_gpus
        body = self.request(
            "POST",
            f"/api/v1/clusters/{cluster}/lease",
            params=params,
            timeout=wait + 30,
        )
        return None if body is None else LeaseOut.model_validate(body)
