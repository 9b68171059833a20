"""The SDK's HTTP core: one ``httpx.Client``, and each refusal raised as the Bastion error
the server raised."""

from __future__ import annotations

import secrets
import ssl
import time
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx  # without its command-line tool: see bastion/__init__.py
from pydantic import BaseModel

from bastion.errors import BastionError, ConfigurationError, ServiceUnavailable
from bastion.http_status import error_from_problem

__all__ = ["Transport"]

M = TypeVar("M", bound=BaseModel)

#: Methods that change something: each request carries an ``Idempotency-Key``, so a retry
#: after a lost answer is answered from the first attempt instead of being done twice.
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Tries of one request when the connection breaks after it was sent (a lost answer).
ATTEMPTS = 3
#: Failures after which the request may have reached the control plane: retried, with the
#: same key for a write. (A connection that was never made is reported at once.)
_RETRIED = (httpx.ReadTimeout, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


def _error(response: httpx.Response) -> BastionError:
    """The error the server raised, rebuilt from its problem details (RFC 9457)."""
    try:
        body: object = response.json()
    except ValueError:
        body = None
    return error_from_problem(
        response.status_code,
        body,
        retry_after=response.headers.get("retry-after"),
        fallback=response.text[:500] or response.reason_phrase,
    )


class Transport:
    """The connection every per-resource part of :class:`bastion.client.Client` calls through."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        verify: bool | str = True,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        # A string names a PEM bundle of a private CA to trust.
        tls = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        self._http = httpx.Client(
            base_url=self.url, headers=headers, verify=tls, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; the decoded JSON body (None when empty), or the error it maps to.

        The untyped way in, for a route the client has no method for."""
        response = self.response(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def response(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; the raw response when it succeeded, else the error it maps to.

        A write carries a fresh ``Idempotency-Key`` (unless the caller set one). When the
        connection breaks after sending, the request is sent again with the same key, up to
        :data:`ATTEMPTS` times: the control plane answers a retry of a write it carried out
        with the first answer, so the one result is reported, never a duplicate."""
        headers = dict(kwargs.pop("headers", None) or {})
        if method in WRITES and not any(name.lower() == "idempotency-key" for name in headers):
            headers["Idempotency-Key"] = secrets.token_urlsafe(24)
        deadline = time.monotonic() + (self._http.timeout.read or 30.0)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(method, path, headers=headers, **kwargs)
            except _RETRIED as exc:
                if attempt >= ATTEMPTS:
                    raise self._unanswered(method, exc, attempts=attempt) from None
                time.sleep(0.25 * 2**attempt)
                continue
            except httpx.TransportError as exc:
                raise self._unanswered(method, exc, attempts=attempt) from None
            if (
                response.status_code == 409
                and "retry-after" in response.headers
                and method in WRITES
                and time.monotonic() < deadline
            ):
                time.sleep(1.0)  # the first attempt is still being carried out
                continue
            if response.status_code >= 400:
                raise _error(response)
            return response

    def _unanswered(
        self, method: str, exc: httpx.TransportError, *, attempts: int = 1
    ) -> BastionError:
        """What to tell the caller when no answer came: it matters whether the control plane
        was reached, because a write it received may have been carried out."""
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return ConfigurationError(
                f"the TLS certificate of {self.url} is not trusted; pass --ca-cert with the "
                "CA that issued it"
            )
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return ServiceUnavailable(
                f"cannot reach the control plane at {self.url}: {type(exc).__name__}"
            )
        tries = f" ({attempts} tries)" if attempts > 1 else ""
        outcome = (
            tries
            if method not in WRITES
            else f"{tries}; the change may have been made: look before you retry"
        )
        if isinstance(exc, httpx.TimeoutException):
            seconds = self._http.timeout.read
            return ServiceUnavailable(
                f"the control plane at {self.url} is slow to answer (nothing within "
                f"{seconds:g} s){outcome}; set BASTION_TIMEOUT to wait longer"
            )
        return ServiceUnavailable(
            f"the control plane at {self.url} closed the connection before answering "
            f"({type(exc).__name__}){outcome}"
        )

    def _one(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        """The response body as ``model`` (the route's response model)."""
        return model.model_validate(self.request(method, path, **kwargs))

    def _many(self, model: type[M], method: str, path: str, **kwargs: Any) -> list[M]:
        """The response body, a JSON array, as a list of ``model``."""
        return [model.model_validate(item) for item in self.request(method, path, **kwargs)]
