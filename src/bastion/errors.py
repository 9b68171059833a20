"""Every error Bastion raises on purpose, rooted at :class:`BastionError`.

Domain code raises these; the CLI turns them into one line on stderr and an exit
code, and the server (later) into HTTP statuses. Each message says what was
wrong and what to do about it.

::

    BastionError
    ├── CheckFailed                   exit 1: a security or policy check said no
    │   ├── IntegrityError            bytes changed, truncated, swapped or unreadable
    │   │   ├── UnknownKeyError       encrypted under a key this keyring does not hold
    │   │   └── ShreddedError         the artifact's data key was destroyed
    │   ├── SignatureError            signature missing, damaged, or does not match
    │   ├── UnsafeFileError           a model file that could run code when loaded
    │   ├── AuditChainError           the audit log was tampered with
    │   ├── PolicyViolation           a policy gate refused
    │   └── NotAuthorized             the caller may not do this
    │       ├── NotAuthenticated      no valid credential was presented
    │       ├── RateLimited           too many attempts; wait and retry
    │       └── SeparationOfDuties    approving one's own work (raises an alert)
    └── UsageError                    exit 2: bad usage or bad input
        ├── InvalidInput              an argument or file is not what was expected
        ├── InvalidSpec               a spec or policy document failed validation
        ├── NotFound                  the named thing does not exist
        ├── Conflict                  it exists already, or its state forbids this
        ├── ServiceUnavailable        a dependency (database, server) is down; retry
        └── ConfigurationError        settings or the key store are unusable
            └── InsecureKeyFileError  a key file others can read
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "AuditChainError",
    "BastionError",
    "CheckFailed",
    "ConfigurationError",
    "Conflict",
    "InsecureKeyFileError",
    "IntegrityError",
    "InvalidInput",
    "InvalidSpec",
    "NotAuthenticated",
    "NotAuthorized",
    "NotFound",
    "PolicyViolation",
    "RateLimited",
    "SeparationOfDuties",
    "ServiceUnavailable",
    "ShreddedError",
    "SignatureError",
    "UnknownKeyError",
    "UnsafeFileError",
    "UsageError",
]


class BastionError(Exception):
    """Root of every error Bastion raises on purpose."""

    exit_code: int = 1


class CheckFailed(BastionError):
    """A security or policy check refused; the CLI exits with 1."""

    exit_code = 1


class IntegrityError(CheckFailed):
    """Content does not match what was written or signed."""


class UnknownKeyError(IntegrityError):
    """The data was protected with a key id that this keyring does not hold."""


class ShreddedError(IntegrityError):
    """The artifact's wrapped data key was destroyed; it can never be decrypted."""


class SignatureError(CheckFailed):
    """A signature is missing, damaged, made by another key, or does not match."""


class UnsafeFileError(CheckFailed):
    """A foreign model file is not provably safe to load; ``reasons`` lists every finding."""

    def __init__(self, message: str, *, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.reasons = list(reasons or [])


class AuditChainError(CheckFailed):
    """The audit chain is broken.

    ``kind`` is one of ``modified``, ``deleted``, ``inserted``, ``reordered``,
    ``truncated``, ``unsigned`` or ``signature``; ``seq`` is the first bad event.
    """

    def __init__(self, message: str, *, kind: str, seq: int | None) -> None:
        super().__init__(message)
        self.kind = kind
        self.seq = seq


class PolicyViolation(CheckFailed):
    """A policy gate refused a promotion or a run."""


class NotAuthorized(CheckFailed):
    """The caller's identity or role does not allow the action."""


class SeparationOfDuties(NotAuthorized):
    """Someone tried to approve or reject their own work; the attempt raises an alert."""


class NotAuthenticated(NotAuthorized):
    """No credential, or one that is unknown, expired or revoked."""


class RateLimited(NotAuthorized):
    """Too many attempts in a window; ``retry_after`` says how many seconds to wait."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UsageError(BastionError):
    """The request itself is wrong; the CLI exits with 2."""

    exit_code = 2


class InvalidInput(UsageError):
    """An argument or input file is not what was expected."""


class InvalidSpec(UsageError):
    """A spec or policy document failed validation."""


class NotFound(UsageError):
    """The named user, project, run ... does not exist."""


class Conflict(UsageError):
    """The thing exists already, or its current state does not allow this change."""


class ServiceUnavailable(UsageError):
    """A service Bastion depends on is unreachable; retrying later may succeed."""


class ConfigurationError(UsageError):
    """Settings, the Bastion home or the key store cannot be used as they are."""


class InsecureKeyFileError(ConfigurationError):
    """A key file is readable by group or others."""

    def __init__(self, path: Path, mode: int) -> None:
        super().__init__(
            f"{path}: key file has mode {mode:04o}, readable by group or others; "
            f"run 'chmod 600 {path}' and rotate the keys if others may have read it"
        )
        self.path = path
