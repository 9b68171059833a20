"""What every CLI verb needs: settings, consoles, the keyring and the local audit log."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from rich.console import Console

from bastion.config import Settings
from bastion.security.audit import AuditLog, local_actor, open_local_audit_log
from bastion.security.keys import Keyring, load_keyring

__all__ = ["State", "audit", "err", "keyring", "out", "record", "settings", "state"]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class State:
    debug: bool = False


state = State()


@cache
def settings() -> Settings:
    return Settings()


@cache
def keyring() -> Keyring:
    return load_keyring(settings())


@cache
def audit() -> AuditLog:
    return open_local_audit_log(settings(), keyring())


def record(action: str, target: str, details: dict[str, Any] | None = None) -> None:
    """Append an audit event for a verb that changed keys or artifacts."""
    audit().append(actor=local_actor(), action=action, target=target, details=details or {})


def reset() -> None:
    """Forget cached settings, keys and log (tests run many commands in one process)."""
    settings.cache_clear()
    keyring.cache_clear()
    audit.cache_clear()
    state.debug = False
