"""Login throttling: failures counted per account and per client address in a sliding window."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

from bastion.errors import RateLimited

__all__ = ["LoginThrottle"]


class LoginThrottle:
    """At most ``max_failures`` per account and ``4 * max_failures`` per address per window."""

    def __init__(self, *, max_failures: int, window_seconds: int) -> None:
        self._max = max_failures
        self._window = window_seconds
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        stamps = self._failures[key]
        while stamps and stamps[0] <= now - self._window:
            stamps.popleft()
        return stamps

    def check(self, *, account: str, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key, limit in (
                (f"account:{account}", self._max),
                (f"address:{address}", 4 * self._max),
            ):
                stamps = self._recent(key, now)
                if len(stamps) >= limit:
                    retry = int(stamps[0] + self._window - now) + 1
                    raise RateLimited(
                        f"too many failed logins; retry in {retry} seconds", retry_after=retry
                    )

    def failed(self, *, account: str, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._failures[f"account:{account}"].append(now)
            self._failures[f"address:{address}"].append(now)

    def succeeded(self, *, account: str) -> None:
        with self._lock:
            self._failures.pop(f"account:{account}", None)
