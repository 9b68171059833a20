"""Every error Bastion raises on purpose, rooted at :class:`BastionError`.

Domain code raises these; the CLI turns them into one line on stderr and an exit
code, and the servers into RFC 9457 problem details (``bastion.http_status``).
Each class has a stable problem ``type`` (``urn:bastion:error:<name>``), so an
error keeps its kind across the wire: the SDK raises the class the server
raised. Each message says what was wrong and what to do about it.

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
        │   └── CodeRefused           a code package breaks a rule (what, and in which file)
        ├── InvalidSpec               a spec or policy document failed validation
        ├── NotFound                  the named thing does not exist
        ├── Conflict                  it exists already, or its state forbids this
        ├── ServiceUnavailable        a dependency (database, server) is down; retry
        └── ConfigurationError        settings or the key store are unusable
            └── InsecureKeyFileError  a key file others can read
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

__all__ = [
    "AuditChainError",
    "BastionError",
    "CheckFailed",
    "CodeRefused",
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
    "error_class",
]

#: Prefix of every problem ``type`` Bastion sends; the rest names the class.
PROBLEM_PREFIX = "urn:bastion:error:"
_BY_TYPE: dict[str, type[BastionError]] = {}


class BastionError(Exception):
    """Root of every error Bastion raises on purpose."""

    exit_code: int = 1
    #: The stable problem-details ``type`` of this class (never derived from its Python name,
    #: so a rename does not change what clients see).
    problem_type: ClassVar[str] = PROBLEM_PREFIX + "bastion"
    #: Attributes sent as problem-details extension members, and restored by ``from_problem``.
    problem_fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, *, problem: str | None = None, **kwargs: object) -> None:
        # A subclass without a problem name of its own travels as its parent's kind.
        super().__init_subclass__(**kwargs)
        if problem is None:
            return
        cls.problem_type = PROBLEM_PREFIX + problem
        if cls.problem_type in _BY_TYPE:
            raise TypeError(
                f"problem type {cls.problem_type} is taken by {_BY_TYPE[cls.problem_type]}"
            )
        _BY_TYPE[cls.problem_type] = cls

    def problem_extensions(self) -> dict[str, object]:
        """Extension members of this error's problem details (JSON values only)."""
        return {name: getattr(self, name) for name in self.problem_fields}

    @classmethod
    def from_problem(cls, message: str, extensions: Mapping[str, object]) -> BastionError:
        """Rebuild an error of this class from a problem's detail and extension members,
        without running a subclass's own ``__init__`` (whose arguments may not travel)."""
        error = cls.__new__(cls)
        Exception.__init__(error, message)
        for name in cls.problem_fields:
            setattr(error, name, extensions.get(name))
        return error


_BY_TYPE[BastionError.problem_type] = BastionError


def error_class(problem_type: object) -> type[BastionError]:
    """The class a problem ``type`` names; ``BastionError`` for an unknown or missing one."""
    return _BY_TYPE.get(str(problem_type), BastionError)


class CheckFailed(BastionError, problem="check-failed"):
    """A security or policy check refused; the CLI exits with 1."""

    exit_code = 1


class IntegrityError(CheckFailed, problem="integrity"):
    """Content does not match what was written or signed."""


class UnknownKeyError(IntegrityError, problem="unknown-key"):
    """The data was protected with a key id that this keyring does not hold."""


class ShreddedError(IntegrityError, problem="shredded"):
    """The artifact's wrapped data key was destroyed; it can never be decrypted."""


class SignatureError(CheckFailed, problem="signature"):
    """A signature is missing, damaged, made by another key, or does not match."""


class UnsafeFileError(CheckFailed, problem="unsafe-file"):
    """A foreign model file is not provably safe to load; ``reasons`` lists every finding."""

    problem_fields = ("reasons",)

    def __init__(self, message: str, *, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.reasons = list(reasons or [])


class AuditChainError(CheckFailed, problem="audit-chain"):
    """The audit chain is broken.

    ``kind`` is one of ``modified``, ``deleted``, ``inserted``, ``reordered``,
    ``truncated``, ``unsigned`` or ``signature``; ``seq`` is the first bad event.
    """

    problem_fields = ("kind", "seq")

    def __init__(self, message: str, *, kind: str, seq: int | None) -> None:
        super().__init__(message)
        self.kind = kind
        self.seq = seq


class PolicyViolation(CheckFailed, problem="policy-violation"):
    """A policy gate refused a promotion or a run."""


class NotAuthorized(CheckFailed, problem="not-authorized"):
    """The caller's identity or role does not allow the action."""


class SeparationOfDuties(NotAuthorized, problem="separation-of-duties"):
    """Someone tried to approve or reject their own work; the attempt raises an alert."""


class NotAuthenticated(NotAuthorized, problem="not-authenticated"):
    """No credential, or one that is unknown, expired or revoked."""


class RateLimited(NotAuthorized, problem="rate-limited"):
    """Too many attempts in a window; ``retry_after`` says how many seconds to wait."""

    problem_fields = ("retry_after",)

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UsageError(BastionError, problem="usage"):
    """The request itself is wrong; the CLI exits with 2."""

    exit_code = 2


class InvalidInput(UsageError, problem="invalid-input"):
    """An argument or input file is not what was expected."""


class CodeRefused(InvalidInput, problem="code-refused"):
    """A code package breaks a rule (what was found, and in which file)."""


class InvalidSpec(UsageError, problem="invalid-spec"):
    """A spec or policy document failed validation."""


class NotFound(UsageError, problem="not-found"):
    """The named user, project, run ... does not exist."""


class Conflict(UsageError, problem="conflict"):
    """The thing exists already, or its current state does not allow this change."""


class ServiceUnavailable(UsageError, problem="service-unavailable"):
    """A service Bastion depends on is unreachable; retrying later may succeed."""


class ConfigurationError(UsageError, problem="configuration"):
    """Settings, the Bastion home or the key store cannot be used as they are."""


class InsecureKeyFileError(ConfigurationError, problem="insecure-key-file"):
    """A key file is readable by group or others."""

    def __init__(self, path: Path, mode: int) -> None:
        super().__init__(
            f"{path}: key file has mode {mode:04o}, readable by group or others; "
            f"run 'chmod 600 {path}' and rotate the keys if others may have read it"
        )
        self.path = path
