"""Serving keys: ``bsk_<id>_<secret>``, checked against the records the control plane holds.

The server keeps a copy of its deployment's key records (id, SHA-256 of the secret,
scopes, limits, expiry, revocation) and refreshes it every few seconds, so a revocation
takes effect within that interval. If the copy grows older than ``max_age`` (the
control plane unreachable), every key is refused: fail closed.
"""

from __future__ import annotations

import datetime as dt
import enum
import threading
import time
from dataclasses import dataclass

from bastion.errors import NotAuthenticated, NotAuthorized, ServiceUnavailable
from bastion.security.credentials import parse_token, secrets_match

__all__ = ["SERVING_KEY_PREFIX", "KeyRecord", "KeyStore", "Scope"]

SERVING_KEY_PREFIX = "bsk"


class Scope(enum.StrEnum):
    PREDICT = "predict"
    EXPLAIN = "explain"
    METRICS = "metrics"


@dataclass(frozen=True)
class KeyRecord:
    """What the server knows of one key; never the secret itself."""

    id: str
    secret_hash: str
    scopes: frozenset[str]
    #: Requests per second the bucket refills with, and how many it holds.
    rate: float | None = None
    burst: int | None = None
    #: Requests per UTC day.
    quota: int | None = None
    expires_at: dt.datetime | None = None
    revoked: bool = False
    #: Who minted it: extraction is also judged over all the keys of one owner.
    owner: str | None = None


class KeyStore:
    """The current key records of one deployment."""

    def __init__(self, *, max_age: float = 60.0) -> None:
        self._records: dict[str, KeyRecord] = {}
        self._updated: float | None = None
        self._max_age = max_age
        self._lock = threading.Lock()

    def replace(self, records: list[KeyRecord]) -> None:
        with self._lock:
            self._records = {record.id: record for record in records}
            self._updated = time.monotonic()

    @property
    def fresh(self) -> bool:
        return self._updated is not None and time.monotonic() - self._updated <= self._max_age

    def identify(self, authorization: str | None) -> str | None:
        """The id of a known key in the header (for the audit trail), checked or not."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        parsed = parse_token(authorization[len("Bearer ") :].strip(), SERVING_KEY_PREFIX)
        return parsed[0] if parsed and parsed[0] in self._records else None

    def check(self, authorization: str | None, scope: Scope) -> KeyRecord:
        """The key presented in an ``Authorization: Bearer`` header, if it may use ``scope``."""
        if not self.fresh:
            raise ServiceUnavailable(
                "serving keys could not be refreshed from the control plane; refusing all keys"
            )
        if not authorization or not authorization.startswith("Bearer "):
            raise NotAuthenticated("missing serving key: send 'Authorization: Bearer bsk_...'")
        parsed = parse_token(authorization[len("Bearer ") :].strip(), SERVING_KEY_PREFIX)
        record = self._records.get(parsed[0]) if parsed else None
        if parsed is None or record is None or not secrets_match(parsed[1], record.secret_hash):
            raise NotAuthenticated("unknown serving key")
        if record.revoked:
            raise NotAuthenticated(f"serving key {record.id[:8]} was revoked")
        if record.expires_at is not None and record.expires_at <= dt.datetime.now(dt.UTC):
            raise NotAuthenticated(f"serving key {record.id[:8]} has expired")
        if scope.value not in record.scopes:
            raise NotAuthorized(f"serving key {record.id[:8]} lacks the {scope.value!r} scope")
        return record
