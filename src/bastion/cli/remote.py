"""The control-plane client for CLI verbs, from the credentials ``bastion login`` saved."""

from __future__ import annotations

from bastion.cli.context import settings
from bastion.client import Client

__all__ = ["client"]


def client() -> Client:
    return Client.from_settings(settings())
