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
``deployments``, ``code``); ``Client`` is all of them over one connection (``_transport``).
"""

from __future__ import annotations

from bastion.api.audit import AuditEventOut, AuditVerifyOut
from bastion.api.clusters import (
    ClusterOut,
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
from bastion.api.runs import LogLineOut, MetricOut, RunEventOut, RunOut
from bastion.client.audit import AuditMixin
from bastion.client.clusters import ClustersMixin
from bastion.client.code import CodeMixin
from bastion.client.credentials import load_credentials, save_credentials
from bastion.client.datasets import DatasetsMixin
from bastion.client.deployments import DeploymentsMixin
from bastion.client.governance import GovernanceMixin
from bastion.client.identity import IdentityMixin
from bastion.client.models import ModelsMixin
from bastion.client.privacy import PrivacyMixin
from bastion.client.projects import ProjectsMixin
from bastion.client.runs import RunsMixin
from bastion.config import Settings

__all__ = [
    "AlertOut",
    "ApprovalOut",
    "AuditEventOut",
    "AuditVerifyOut",
    "Client",
    "ClusterOut",
    "CodePackageOut",
    "CodeVersionOut",
    "DatasetOut",
    "DatasetVersionOut",
    "DeploymentOut",
    "ErasureOut",
    "EvaluationOut",
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


class Client(
    IdentityMixin,
    ProjectsMixin,
    ClustersMixin,
    RunsMixin,
    DatasetsMixin,
    ModelsMixin,
    GovernanceMixin,
    PrivacyMixin,
    AuditMixin,
    DeploymentsMixin,
    CodeMixin,
):
    """A thin, typed wrapper over the control plane's REST API.

    ``Client(url, token=..., verify=True | "ca.pem", timeout=30.0)``; use it as a context
    manager, or ``close()`` it."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Client:
        """A client for the control plane saved by ``bastion login``."""
        url, token, verify = load_credentials(settings)
        return cls(url, token=token, verify=verify, timeout=settings.timeout)
