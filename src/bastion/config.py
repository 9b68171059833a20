"""The one place Bastion reads its settings: environment (``BASTION_*``) and defaults.

A plain pydantic model reads the environment itself (every field from ``BASTION_<FIELD>``,
the variable's name in any case, plus the older names in :data:`OLDER_NAMES`): every CLI
command builds one, and a settings library would cost each of them a tenth of a second of
imports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from bastion.files import ensure_private_root

__all__ = ["OLDER_NAMES", "PREFIX", "Settings"]

PREFIX = "BASTION_"
#: Variables a field is also read from, in order, after ``BASTION_<FIELD>``.
OLDER_NAMES: dict[str, tuple[str, ...]] = {
    "local_audit_database_url": ("BASTION_DATABASE_URL",),
    "control_plane_database_url": ("BASTION_SERVER_DATABASE_URL",),
}


class Settings(BaseModel):
    """Process-wide settings: arguments first, then the environment, then the defaults.

    ``BASTION_HOME`` holds the keys, the local database and the local storage.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _environment(cls, given: Any) -> Any:
        if not isinstance(given, dict):
            return given
        environment = {
            name.upper(): value
            for name, value in os.environ.items()
            if name.upper().startswith(PREFIX)
        }
        merged = dict(given)
        for field in cls.model_fields:
            if field in merged:
                continue
            for variable in (PREFIX + field.upper(), *OLDER_NAMES.get(field, ())):
                if variable in environment:
                    merged[field] = environment[variable]
                    break
        return merged

    home: Path = Field(default_factory=lambda: Path.home() / ".bastion")
    master_key: SecretStr | None = None
    #: The audit log of actions taken on this host without a control plane (``bastion
    #: encrypt``, ``keys``, ...); ``BASTION_DATABASE_URL`` is its older name.
    local_audit_database_url: str | None = None
    audit_checkpoint_interval: int = Field(default=1000, ge=1)
    #: A long-running control plane signs its audit head this often (when events came since),
    #: as well as at start-up and shutdown.
    audit_checkpoint_seconds: float = Field(default=300.0, ge=0.05, le=86400)
    #: How often a dashboard view verifies the control plane's audit chain from its start.
    audit_whole_verify_minutes: int = Field(default=60, ge=0, le=10080)
    #: The control plane's database; ``BASTION_SERVER_DATABASE_URL`` is its older name.
    control_plane_database_url: str | None = None
    max_request_bytes: int = Field(default=1 << 20, ge=1024)
    #: How long the SDK and CLI wait for the control plane's answer (seconds), ``BASTION_TIMEOUT``.
    timeout: float = Field(default=30.0, gt=0, le=3600)
    login_max_failures: int = Field(default=5, ge=1)
    login_window_seconds: int = Field(default=900, ge=1)
    session_token_hours: int = Field(default=12, ge=1)
    auth_cache_seconds: float = Field(default=2.0, ge=0, le=60)
    lease_seconds: int = Field(default=30, ge=2, le=3600)
    #: The agent's relay socket: a job's only channel (set by the agent for a job only).
    relay: str | None = None
    #: An agent's one-time join token (``bastion agent start``), kept out of the process list.
    join_token: SecretStr | None = None
    #: The most GPUs an agent advertises and gives jobs (``bastion agent start --gpus``);
    #: None: every GPU ``torch.cuda`` finds on its host; 0: none (a CPU-only agent).
    agent_gpus: int | None = Field(default=None, ge=0, le=64)
    pseudonym_key: SecretStr | None = None  # set by the agent for pseudonymisation jobs only
    erase_subject: SecretStr | None = None  # set by the agent for erasure jobs only

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser()

    def private_home(self) -> Path:
        """The home, created 0700 if missing; refused if group or others can reach it.

        Long-running processes (``bastion up``, ``server``, ``agent``) check it before they
        create anything in it, as the key store checks ``master.key``.
        """
        return ensure_private_root(self.home_dir, what="BASTION_HOME")

    @property
    def keys_dir(self) -> Path:
        return self.home_dir / "keys"

    @property
    def master_key_file(self) -> Path:
        return self.home_dir / "master.key"

    @property
    def storage_dir(self) -> Path:
        return self.home_dir / "storage"

    @property
    def control_plane_database(self) -> str:
        """The control plane's database URL; SQLite in ``BASTION_HOME`` unless configured."""
        if self.control_plane_database_url:
            return self.control_plane_database_url
        return f"sqlite:///{self.home_dir / 'control-plane.db'}"

    @property
    def credentials_file(self) -> Path:
        return self.home_dir / "credentials.json"

    @property
    def local_audit_database(self) -> str:
        """The local audit log's database URL; SQLite in ``BASTION_HOME`` unless configured."""
        if self.local_audit_database_url:
            return self.local_audit_database_url
        return f"sqlite:///{self.home_dir / 'bastion.db'}"
