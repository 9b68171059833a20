"""The control plane's URL and token as ``bastion login`` saves them in ``BASTION_HOME``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bastion.config import Settings
from bastion.errors import InsecureKeyFileError, NotAuthenticated
from bastion.files import atomic_write_bytes

__all__ = ["load_credentials", "save_credentials"]


def save_credentials(settings: Settings, *, url: str, token: str, verify: bool | str) -> Path:
    """Store the control plane URL and token in ``BASTION_HOME`` with mode 0600."""
    path = settings.credentials_file
    settings.home_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    payload = {"url": url, "token": token, "verify": verify}
    atomic_write_bytes(path, json.dumps(payload).encode(), mode=0o600)
    return path


def load_credentials(settings: Settings) -> tuple[str, str, bool | str]:
    """The saved URL, token and TLS verification (a CA bundle's path, or a bool)."""
    path = settings.credentials_file
    if not path.is_file():
        raise NotAuthenticated("not logged in; run 'bastion login --url URL --token TOKEN'")
    if os.stat(path).st_mode & 0o077:
        raise InsecureKeyFileError(path, os.stat(path).st_mode & 0o777)
    data = json.loads(path.read_text())
    return str(data["url"]), str(data["token"]), data.get("verify", True)
