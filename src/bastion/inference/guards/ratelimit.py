"""Per-key rate limits (token bucket) and daily quotas.

One replica keeps the buckets in memory; several replicas share them in Redis, where a
Lua script refills and takes from a bucket atomically on Redis's own clock, so the
limit holds across replicas however requests are spread.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from typing import Any, Protocol

from bastion.errors import RateLimited, ServiceUnavailable
from bastion.inference.guards.auth import KeyRecord

__all__ = ["Limiter", "MemoryLimiter", "RedisLimiter", "make_limiter"]


class Limiter(Protocol):
    def take(self, key: KeyRecord, cost: int = 1) -> None:
        """Spend ``cost`` requests of ``key``; raise :class:`RateLimited` when it has none."""


def _burst(key: KeyRecord) -> float:
    return float(key.burst if key.burst is not None else max(1, math.ceil(key.rate or 1)))


def _day() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d")


def _seconds_to_midnight() -> int:
    now = dt.datetime.now(dt.UTC)
    midnight = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((midnight - now).total_seconds()) + 1


def _quota_refused(key: KeyRecord) -> RateLimited:
    return RateLimited(
        f"serving key {key.id[:8]} used its quota of {key.quota} requests today",
        retry_after=_seconds_to_midnight(),
    )


def _rate_refused(key: KeyRecord, wait: float) -> RateLimited:
    return RateLimited(
        f"serving key {key.id[:8]} is over its rate of {key.rate}/s",
        retry_after=max(1, math.ceil(wait)),
    )


class MemoryLimiter:
    """Buckets in this process (one replica)."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._used: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def take(self, key: KeyRecord, cost: int = 1) -> None:
        now = time.monotonic()
        with self._lock:
            if key.rate is not None:
                burst = _burst(key)
                tokens, stamp = self._buckets.get(key.id, (burst, now))
                tokens = min(burst, tokens + (now - stamp) * key.rate)
                if tokens < cost:
                    self._buckets[key.id] = (tokens, now)
                    raise _rate_refused(key, (cost - tokens) / key.rate)
                self._buckets[key.id] = (tokens - cost, now)
            if key.quota is not None:
                day = (key.id, _day())
                if self._used.get(day, 0) + cost > key.quota:
                    raise _quota_refused(key)
                self._used[day] = self._used.get(day, 0) + cost


#: KEYS[1] bucket hash; ARGV: rate, burst, cost. Returns {allowed, wait in ms}.
_BUCKET = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1]) or burst
local stamp = tonumber(state[2]) or t
tokens = math.min(burst, tokens + (t - stamp) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = math.ceil((cost - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'stamp', t)
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return {allowed, wait}
"""

#: KEYS[1] the day's counter; ARGV: quota, cost. Counts only what it allows.
_QUOTA = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + tonumber(ARGV[2]) > tonumber(ARGV[1]) then return 0 end
redis.call('INCRBY', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], 172800)
return 1
"""


class RedisLimiter:
    """Buckets in Redis, shared by every replica of a deployment."""

    def __init__(self, client: Any, *, namespace: str) -> None:
        self._client = client
        self._namespace = namespace
        self._bucket = client.register_script(_BUCKET)
        self._quota = client.register_script(_QUOTA)

    def take(self, key: KeyRecord, cost: int = 1) -> None:
        import redis  # noqa: PLC0415 - an optional dependency (the redis extra)

        prefix = f"bastion:{self._namespace}:{key.id}"
        try:
            if key.rate is not None:
                allowed, wait_ms = self._bucket(
                    keys=[f"{prefix}:bucket"], args=[key.rate, _burst(key), cost]
                )
                if not allowed:
                    raise _rate_refused(key, int(wait_ms) / 1000)
            if key.quota is not None and not self._quota(
                keys=[f"{prefix}:quota:{_day()}"], args=[key.quota, cost]
            ):
                raise _quota_refused(key)
        except redis.RedisError as exc:  # no shared state: refuse rather than serve unlimited
            raise ServiceUnavailable(f"rate-limit store unreachable ({exc}); retry") from None


def make_limiter(redis_url: str | None, *, namespace: str) -> Limiter:
    if redis_url is None:
        return MemoryLimiter()
    try:
        import redis  # noqa: PLC0415
    except ImportError:
        raise ServiceUnavailable(
            "replicas share rate limits in Redis: install bastion[redis]"
        ) from None
    return RedisLimiter(redis.Redis.from_url(redis_url), namespace=namespace)
