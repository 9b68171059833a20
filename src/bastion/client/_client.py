"""``Client``: every per-resource part of the SDK over one connection (see the package)."""

from __future__ import annotations

from bastion.client.audit import AuditMixin
from bastion.client.clusters import ClustersMixin
from bastion.client.code import CodeMixin
from bastion.client.credentials import load_credentials
from bastion.client.datasets import DatasetsMixin
from bastion.client.deployments import DeploymentsMixin
from bastion.client.federation import FederationJobMixin
from bastion.client.governance import GovernanceMixin
from bastion.client.identity import IdentityMixin
from bastion.client.models import ModelsMixin
from bastion.client.privacy import PrivacyMixin
from bastion.client.projects import ProjectsMixin
from bastion.client.runs import RunsMixin
from bastion.config import Settings

__all__ = ["Client"]


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
    FederationJobMixin,
):
    """A thin, typed wrapper over the control plane's REST API.

    ``Client(url, token=..., verify=True | "ca.pem", timeout=30.0)``; use it as a context
    manager, or ``close()`` it."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Client:
        """A client for the control plane saved by ``bastion login``."""
        url, token, verify = load_credentials(settings)
        return cls(url, token=token, verify=verify, timeout=settings.timeout)
