"""Python SDK for the control plane (used by the CLI, the agent and by users).

Every call returns the API's own response models (``bastion.api``), re-exported here::

    from bastion.client import Client, ProjectOut

    with Client("https://bastion.example:8600", token="bst_...") as bastion:
        project: ProjectOut = bastion.create_project("cardiology")
        print(project.name, project.created_at)  # a str and a datetime
        for run in bastion.list_runs("cardiology"):  # a list of RunOut
            print(run.id, run.status, run.status_reason)
        # the JSON the server sent, field names as on the wire:
        print(project.model_dump(mode="json", by_alias=True))

A few routes answer with a document of their own shape (the model card, the lineage graph,
a serve job's key records): those calls return plain dicts and say so. ``request`` calls
any route and returns its decoded JSON.

A refusal comes back as the Bastion error the server raised (its problem-details
``type`` names the class: a signature failure is a ``SignatureError`` here too),
carrying the server's message; an answer without a known type is mapped by status
(401 ``NotAuthenticated``, 403 ``NotAuthorized``, 404 ``NotFound``, 409
``Conflict``, 422 ``InvalidInput``, 429 ``RateLimited``, 503 ``ServiceUnavailable``).

One module per resource holds its calls (``identity``, ``projects``, ``clusters`` with the
agent protocol, ``runs``, ``datasets``, ``models``, ``governance``, ``privacy``, ``audit``,
``deployments``, ``code``, ``federation``); ``Client`` is all of them over one connection
(``_transport``).

The names here load when first used, so a process that needs one part (a job reports
through ``runs`` alone) does not build every resource's models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.api.audit import AuditEventOut, AuditVerifyOut
    from bastion.api.clusters import (
        Capacity,
        ClusterOut,
        GpuInfo,
        HeartbeatOut,
        JoinOut,
        JoinTokenOut,
        LeaseOut,
        NewClusterOut,
    )
    from bastion.api.code import CodePackageOut, CodeVersionOut
    from bastion.api.datasets import DatasetOut, DatasetVersionOut, ErasureOut
    from bastion.api.deployments import DeploymentOut, NewServingKeyOut, ReplicaOut, ServingKeyOut
    from bastion.api.governance import AlertOut, ApprovalOut, PolicyOut, StageTransitionOut
    from bastion.api.identity import NewTokenOut, TokenOut, UserOut, WhoAmI
    from bastion.api.models import EvaluationOut, ModelOut, ModelVersionOut
    from bastion.api.projects import MembershipOut, ProjectOut
    from bastion.api.runs import FederationOut, LogLineOut, MetricOut, RunEventOut, RunOut
    from bastion.client._client import Client
    from bastion.client.credentials import load_credentials, save_credentials

__all__ = [
    "AlertOut",
    "ApprovalOut",
    "AuditEventOut",
    "AuditVerifyOut",
    "Capacity",
    "Client",
    "ClusterOut",
    "CodePackageOut",
    "CodeVersionOut",
    "DatasetOut",
    "DatasetVersionOut",
    "DeploymentOut",
    "ErasureOut",
    "EvaluationOut",
    "FederationOut",
    "GpuInfo",
    "HeartbeatOut",
    "JoinOut",
    "JoinTokenOut",
    "LeaseOut",
    "LogLineOut",
    "MembershipOut",
    "MetricOut",
    "ModelOut",
    "ModelVersionOut",
    "NewClusterOut",
    "NewServingKeyOut",
    "NewTokenOut",
    "PolicyOut",
    "ProjectOut",
    "ReplicaOut",
    "RunEventOut",
    "RunOut",
    "ServingKeyOut",
    "StageTransitionOut",
    "TokenOut",
    "UserOut",
    "WhoAmI",
    "load_credentials",
    "save_credentials",
]

#: Where each name lives: the response models in ``bastion.api``, the rest here.
_HOMES = {
    "AlertOut": "bastion.api.governance",
    "ApprovalOut": "bastion.api.governance",
    "AuditEventOut": "bastion.api.audit",
    "AuditVerifyOut": "bastion.api.audit",
    "Capacity": "bastion.api.clusters",
    "Client": "bastion.client._client",
    "ClusterOut": "bastion.api.clusters",
    "CodePackageOut": "bastion.api.code",
    "CodeVersionOut": "bastion.api.code",
    "DatasetOut": "bastion.api.datasets",
    "DatasetVersionOut": "bastion.api.datasets",
    "DeploymentOut": "bastion.api.deployments",
    "ErasureOut": "bastion.api.datasets",
    "EvaluationOut": "bastion.api.models",
    "FederationOut": "bastion.api.runs",
    "GpuInfo": "bastion.api.clusters",
    "HeartbeatOut": "bastion.api.clusters",
    "JoinOut": "bastion.api.clusters",
    "JoinTokenOut": "bastion.api.clusters",
    "LeaseOut": "bastion.api.clusters",
    "LogLineOut": "bastion.api.runs",
    "MembershipOut": "bastion.api.projects",
    "MetricOut": "bastion.api.runs",
    "ModelOut": "bastion.api.models",
    "ModelVersionOut": "bastion.api.models",
    "NewClusterOut": "bastion.api.clusters",
    "NewServingKeyOut": "bastion.api.deployments",
    "NewTokenOut": "bastion.api.identity",
    "PolicyOut": "bastion.api.governance",
    "ProjectOut": "bastion.api.projects",
    "ReplicaOut": "bastion.api.deployments",
    "RunEventOut": "bastion.api.runs",
    "RunOut": "bastion.api.runs",
    "ServingKeyOut": "bastion.api.deployments",
    "StageTransitionOut": "bastion.api.governance",
    "TokenOut": "bastion.api.identity",
    "UserOut": "bastion.api.identity",
    "WhoAmI": "bastion.api.identity",
    "load_credentials": "bastion.client.credentials",
    "save_credentials": "bastion.client.credentials",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'bastion.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # found here from now on, without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
