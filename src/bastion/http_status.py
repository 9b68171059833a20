"""Which HTTP status each Bastion error becomes (control plane and inference server alike)."""

from __future__ import annotations

from bastion.errors import (
    BastionError,
    CheckFailed,
    Conflict,
    InvalidInput,
    InvalidSpec,
    NotAuthenticated,
    NotAuthorized,
    NotFound,
    PolicyViolation,
    RateLimited,
    ServiceUnavailable,
)

__all__ = ["status_for"]

_STATUS: tuple[tuple[type[BastionError], int], ...] = (
    (RateLimited, 429),
    (NotAuthenticated, 401),
    (NotAuthorized, 403),
    (PolicyViolation, 403),  # refused by a policy gate: a check failed, not bad input
    (NotFound, 404),
    (Conflict, 409),
    (ServiceUnavailable, 503),
    (InvalidInput, 422),
    (InvalidSpec, 422),
    (CheckFailed, 409),
)


def status_for(exc: BastionError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 400
