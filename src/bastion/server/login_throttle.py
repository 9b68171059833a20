"""Login throttling: growing delays per (account, address), a cap per address.

A guesser is slowed where it guesses from: after ``max_failures`` failures of one account
from one address within the window, each further try from that address waits twice as long
as the last (2 s, 4 s, 8 s, ... up to the window). The same account from another address is
not held back, so a stranger cannot lock a user out. One address that fails ``4 *
max_failures`` times across accounts (spraying) waits out the window. Failures of one
account across all addresses are counted so the caller can raise an alert on guessing.

A try holds its place while its password is checked (:meth:`LoginThrottle.attempt`): once a
pair is at its limit, a second try in parallel is refused, so a burst cannot spend one
delay many times over. IPv6 clients count by their /64, which one host usually holds whole.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator

from bastion.errors import RateLimited

__all__ = ["LoginThrottle"]


class LoginThrottle:
    """Failures per (account, address), per address and per account in a sliding window."""

    def __init__(
        self,
        *,
        max_failures: int,
        window_seconds: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_failures
        self._window = window_seconds
        self._clock = clock
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._pending: Counter[str] = Counter()  # tries whose password is being checked
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        stamps = self._failures[key]
        while stamps and stamps[0] <= now - self._window:
            stamps.popleft()
        if not stamps:
            del self._failures[key]  # nothing to remember: keep the table small
            return deque()
        return stamps

    def delay(self, failures: int) -> float:
        """How long to wait after the last of ``failures`` failures of one account and address."""
        if failures < self._max:
            return 0.0
        return float(min(2 ** (failures - self._max + 1), self._window))

    def check(self, *, account: str, address: str) -> None:
        """Raise :class:`RateLimited` if this account may not be tried from this address now."""
        with self._lock:
            self._check(account, _client(address), self._clock())

    @contextlib.contextmanager
    def attempt(self, *, account: str, address: str) -> Iterator[None]:
        """Hold a try of ``account`` from ``address`` while its password is checked (call
        :meth:`failed` or :meth:`succeeded` inside); :class:`RateLimited` when it must wait."""
        key = _pair(account, _client(address))
        with self._lock:
            self._check(account, _client(address), self._clock())
            self._pending[key] += 1
        try:
            yield
        finally:
            with self._lock:
                self._pending[key] -= 1
                if self._pending[key] <= 0:
                    del self._pending[key]

    def _check(self, account: str, client: str, now: float) -> None:
        key = _pair(account, client)
        pair, pending = self._recent(key, now), self._pending[key]
        if pending and len(pair) + pending >= self._max:
            self._refuse(self.delay(len(pair) + pending), "while another is being checked")
        if pair:
            wait = pair[-1] + self.delay(len(pair)) - now
            if wait > 0:
                self._refuse(wait, "from this address")
        spray = self._recent(f"address:{client}", now)
        if len(spray) >= 4 * self._max:
            self._refuse(spray[0] + self._window - now, "from this address")

    @staticmethod
    def _refuse(wait: float, where: str) -> None:
        retry = int(wait) + 1
        raise RateLimited(
            f"too many failed logins {where}; retry in {retry} seconds", retry_after=retry
        )

    def failed(self, *, account: str, address: str) -> int:
        """Count a failure; return the account's failures from every address in the window."""
        now, client = self._clock(), _client(address)
        with self._lock:
            for key in (_pair(account, client), f"address:{client}", f"account:{account}"):
                self._failures[key].append(now)
            return len(self._recent(f"account:{account}", now))

    def succeeded(self, *, account: str, address: str) -> None:
        with self._lock:
            self._failures.pop(_pair(account, _client(address)), None)


def _pair(account: str, client: str) -> str:
    return f"pair:{account}\0{client}"


def _client(address: str) -> str:
    """Who a failure is counted against: the address, or an IPv6 address's /64."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)
