"""Per-API-key rate limits: one token bucket per key, shared through Redis when it is configured.

With ``QASTREAM_REDIS_URL`` set (the cache's setting), every worker takes
tokens from the same bucket, kept in Redis and updated by one Lua script
that reads the clock with ``TIME``: the decision is atomic and uses Redis'
clock, so workers whose clocks disagree cannot together exceed
``rate * t + burst``.  Without Redis, each worker keeps its own buckets.

A limiter must not turn a Redis outage into an API outage.  When Redis
fails, requests are decided by this worker's in-process buckets (each
worker then allows up to the full rate: lenient, not closed), Redis is
skipped for ``retry_seconds`` so a blackholed server costs one time-out per
interval rather than one per request, and the switch is logged once each
way.  The arithmetic is :func:`qastream.policy.quota.take`'s in both places.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any, Callable, Optional

from mode import Service

from qastream.policy.quota import Bucket, capacity, full_at, take, unlimited
from qastream.services.urls import redacted

logger = logging.getLogger(__name__)

KEY_PREFIX = "ratelimit:"

#: Buckets one worker keeps in memory.  Only keys that made a request recently enough for their bucket
#: not to be full again are kept at all (a full bucket decides like none), so this bound only matters
#: when more than this many keys are busy at once: then the least recently used is forgotten early,
#: which hands that key a full bucket: lenient, where growing without bound would take the worker down.
MAX_BUCKETS = 100_000

#: :func:`qastream.policy.quota.take` on a Redis hash {tokens, at}, timed by the server's clock.
#: KEYS[1] is the key's bucket; ARGV are the rate (tokens/s) and the capacity (tokens).  Returns
#: {1, "0"} when a token was taken, else {0, retry-after seconds} (strings: Redis truncates Lua
#: numbers to integers).  Numbers are stored with 17 digits because Lua's tostring keeps 14, too
#: few for epoch seconds to the microsecond.  The key expires when the bucket is full again.
TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local tokens, at = capacity, now
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
if state[1] then
  tokens, at = tonumber(state[1]), tonumber(state[2])
  if now > at then
    tokens, at = math.min(capacity, tokens + (now - at) * rate), now
  end
end
if tokens < 1 then
  return {0, string.format('%.17g', (at - now) + (1 - tokens) / rate)}
end
tokens = tokens - 1
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.17g', at))
local full_in_ms = math.ceil(((at - now) + (capacity - tokens) / rate) * 1000)
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.min(math.max(full_in_ms, 1), 2 ^ 53)))
return {1, '0'}
"""


class MemoryBuckets:
    """This worker's buckets, least recently used first, forgotten once full."""

    def __init__(self, max_buckets: int = MAX_BUCKETS, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_buckets = max_buckets
        self.clock = clock
        #: key id -> (bucket, when it is full again)
        self._buckets: OrderedDict[str, tuple[Bucket, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key_id: str, rate: float, burst: int) -> Optional[float]:
        """None when a token was taken, else seconds until one is available."""
        now = self.clock()
        entry = self._buckets.pop(key_id, None)  # re-inserted below: the most recently used is last
        decision = take(entry[0] if entry else None, rate, burst, now)
        if decision.bucket is not None:
            self._buckets[key_id] = (decision.bucket, full_at(decision.bucket, rate, burst))
        self._evict(now)
        return None if decision.allowed else decision.retry_after

    def _evict(self, now: float) -> None:
        # Amortised O(1): only the least recently used end is looked at.  A full bucket behind a
        # busier one waits for its turn, within the bound.
        while self._buckets:
            key_id, (_, full) = next(iter(self._buckets.items()))
            if full > now and len(self._buckets) <= self.max_buckets:
                return
            del self._buckets[key_id]


class Limiter(Service):
    """Takes one token per request from the bucket of the request's API key."""

    def __init__(self, redis_url: str = "", *, timeout: float = 0.5, retry_seconds: float = 1.0,
                 prefix: str = KEY_PREFIX, max_buckets: int = MAX_BUCKETS,
                 clock: Callable[[], float] = time.monotonic, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.redis_url = redis_url
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self.prefix = prefix
        self.clock = clock
        self.memory = MemoryBuckets(max_buckets, clock)
        self.client: Any = None
        #: The registered Lua script (EVALSHA, loading it again after a Redis restart); None without Redis.
        self.script: Any = None
        self.errors = 0
        #: True from a Redis failure until Redis answers again: requests use :attr:`memory` meanwhile.
        self.degraded = False
        self.suspended_until = 0.0

    async def on_start(self) -> None:
        if not self.redis_url:
            return
        import redis.asyncio as redis

        self.client = redis.Redis.from_url(self.redis_url, socket_timeout=self.timeout,
                                           socket_connect_timeout=self.timeout)
        self.script = self.client.register_script(TAKE_SCRIPT)
        try:
            await self.client.script_load(TAKE_SCRIPT)
        except Exception as exc:
            # Start anyway: requests are limited per worker until Redis answers.
            self._failed(exc)
        else:
            logger.info("rate limits shared through redis at %s", redacted(self.redis_url))

    async def on_stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def take(self, key_id: str, rate: Optional[float], burst: int) -> Optional[float]:
        """None when the request may go on, else seconds until it may (``Retry-After``, rounded up).

        ``key_id`` names the key, never its secret: it is part of a Redis key
        name.  ``rate`` is requests per second, ``None`` for no limit; a rate
        of zero or less raises ``ValueError`` (disable the key instead).
        """
        if rate is None or unlimited(rate):
            return None
        if self.script is None or self.clock() < self.suspended_until:
            return self.memory.take(key_id, rate, burst)
        try:
            allowed, retry_after = await self.script(keys=[self.prefix + key_id], args=[rate, capacity(burst)])
        except Exception as exc:
            self._failed(exc)
            return self.memory.take(key_id, rate, burst)
        if self.degraded:
            self.degraded = False
            logger.info("redis at %s answers again: rate limits are shared again", redacted(self.redis_url))
        return None if allowed == 1 else float(retry_after)

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self.suspended_until = self.clock() + self.retry_seconds
        if not self.degraded:
            self.degraded = True
            logger.warning("rate limiting without redis at %s (%r): each worker limits on its own until it "
                           "answers", redacted(self.redis_url), exc)
