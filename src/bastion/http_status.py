"""How Bastion errors cross HTTP, both ways: RFC 9457 problem details.

The control plane and the inference server answer every refusal with
``application/problem+json``: ``type`` (the error class's stable
``urn:bastion:error:...``), ``title``, ``status``, ``detail`` (the message) and
the class's extension members (``retry_after``, ``reasons``, ``kind``/``seq``).
The SDK turns such a body back into the same class with :func:`error_from_problem`.
"""

from __future__ import annotations

from collections.abc import Mapping

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
    error_class,
)

__all__ = [
    "PROBLEM_JSON",
    "error_from_problem",
    "problem",
    "problem_details",
    "status_for",
]

#: The media type of every error body.
PROBLEM_JSON = "application/problem+json"

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

#: What an error of an unknown kind (an older server, a proxy) is taken for, by status.
_BY_STATUS: dict[int, type[BastionError]] = {
    401: NotAuthenticated,
    403: NotAuthorized,
    404: NotFound,
    409: Conflict,
    413: InvalidInput,
    422: InvalidInput,
    429: RateLimited,
    503: ServiceUnavailable,
}


def status_for(exc: BastionError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 400


def _title(kind: type[BastionError]) -> str:
    return (kind.__doc__ or kind.__name__).strip().splitlines()[0].rstrip(".")


def problem(
    kind: type[BastionError], /, *, status: int, detail: str, **extensions: object
) -> dict[str, object]:
    """A problem-details body for an error of ``kind`` (for refusals raised outside domain
    code: request validation, body limits, the database)."""
    return {
        "type": kind.problem_type,
        "title": _title(kind),
        "status": status,
        "detail": detail,
        **extensions,
    }


def problem_details(exc: BastionError) -> dict[str, object]:
    """The problem-details body for ``exc``, its status included."""
    return problem(type(exc), status=status_for(exc), detail=str(exc), **exc.problem_extensions())


def error_from_problem(
    status: int, body: object, *, retry_after: str | None = None, fallback: str = ""
) -> BastionError:
    """The Bastion error a refusal stands for: the class its problem ``type`` names (the
    status decides when the type is unknown), the server's ``detail`` as its message.

    ``body`` is the decoded JSON (anything: a proxy may answer HTML); ``fallback`` is the
    text to quote when the body has no ``detail``.
    """
    fields: Mapping[str, object] = body if isinstance(body, Mapping) else {}
    detail = str(fields.get("detail", fallback))
    kind = error_class(fields.get("type"))
    if kind is BastionError:
        kind = _BY_STATUS.get(status, BastionError)
    if issubclass(kind, RateLimited):
        extensions = dict(fields)
        extensions.setdefault("retry_after", retry_after or "60")
        try:
            extensions["retry_after"] = int(str(extensions["retry_after"]))
        except ValueError:
            extensions["retry_after"] = 60
        return kind.from_problem(detail, extensions)
    return kind.from_problem(f"control plane refused ({status}): {detail}", fields)
