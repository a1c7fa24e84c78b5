"""The answer cache: Redis when configured, an in-process TTL cache otherwise.

Keys are ``response:<question_id>`` and values the JSON result users see, so
a repeated question is answered without touching the database or the broker.
The cache is an accelerator, never the record: a cache failure is logged and
counted and the request falls through to the database.  Every Redis call is
bounded by a short time-out, and after a failure the cache is skipped for
``retry_seconds``, so a Redis that is down or blackholed slows at most one
request per interval instead of holding every request for a time-out.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from typing import Any, Optional

from mode import Service

from qastream.services.urls import redacted

logger = logging.getLogger(__name__)

KEY_PREFIX = "response:"


def cache_key(question_id: str) -> str:
    """Redis key of a question's cached answer."""
    return KEY_PREFIX + question_id


class Cache(Service):
    """Common counting and the interface of both caches."""

    def __init__(self, ttl_seconds: int, *, retry_seconds: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ttl_seconds = ttl_seconds
        self.retry_seconds = retry_seconds
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self.suspended_until = 0.0

    @property
    def suspended(self) -> bool:
        """True while the cache is skipped after a failure."""
        return time.monotonic() < self.suspended_until

    def _failed(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        self.suspended_until = time.monotonic() + self.retry_seconds
        logger.warning("%s failed (%r): skipping the cache for %.1f s", what, exc, self.retry_seconds)

    async def ping(self) -> None:
        """Raise when the cache cannot be reached; a success ends a suspension (for GET /health)."""
        try:
            await self._ping()
        except Exception as exc:
            self._failed("cache ping", exc)
            raise
        self.suspended_until = 0.0

    async def get(self, question_id: str) -> Optional[dict[str, Any]]:
        """The cached result, counting the hit or miss."""
        if self.suspended:  # counted as a miss: the request goes on without the cache
            value = None
        else:
            try:
                value = await self._get(cache_key(question_id))
            except Exception as exc:
                self._failed(f"cache read of {question_id}", exc)
                value = None
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        return value

    async def put_many(self, results: list[dict[str, Any]]) -> None:
        """Cache results (each has a ``question_id``)."""
        if not results:
            return
        if self.suspended:
            return
        try:
            await self._put_many({cache_key(r["question_id"]): r for r in results})
        except Exception as exc:
            self._failed(f"cache write of {len(results)} result(s)", exc)

    async def info(self) -> dict[str, Any]:
        """Counts for /metrics."""
        return {"backend": self.backend, "hits": self.hits, "misses": self.misses, "errors": self.errors,
                "ttl_seconds": self.ttl_seconds}

    backend = "none"

    async def _ping(self) -> None:
        raise NotImplementedError

    async def _get(self, key: str) -> Optional[dict[str, Any]]:
        raise NotImplementedError

    async def _put_many(self, items: dict[str, dict[str, Any]]) -> None:
        raise NotImplementedError


class MemoryCache(Cache):
    """Per-process TTL cache bounded in bytes, for the zero-setup default.

    Values are kept as their JSON encoding, as Redis keeps them: a few hundred
    bytes per answer instead of the ~2-3 KB of a decoded dict, a bound that is
    measured rather than guessed, and a cached answer that no caller can
    mutate.  The oldest entries go first once ``max_bytes`` is reached, so the
    worker's memory does not grow with the number of questions ever answered.
    """

    backend = "memory"

    #: Bytes an entry costs beyond its key and value: the ordered dict's slot and node, the tuple, the float.
    ENTRY_OVERHEAD = 200

    def __init__(self, ttl_seconds: int, max_bytes: int = 16 * 2**20, **kwargs: Any) -> None:
        super().__init__(ttl_seconds, **kwargs)
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def _size(self, key: str, raw: bytes) -> int:
        return len(key) + len(raw) + self.ENTRY_OVERHEAD

    def _drop(self, key: str) -> None:
        _, raw = self._items.pop(key)
        self.bytes -= self._size(key, raw)

    async def _ping(self) -> None:
        return None

    async def _get(self, key: str) -> Optional[dict[str, Any]]:
        entry = self._items.get(key)
        if entry is None:
            return None
        expires, raw = entry
        if expires < time.monotonic():
            self._drop(key)
            return None
        value: dict[str, Any] = json.loads(raw)
        return value

    async def _put_many(self, items: dict[str, dict[str, Any]]) -> None:
        expires = time.monotonic() + self.ttl_seconds
        for key, value in items.items():
            raw = json.dumps(value, separators=(",", ":")).encode()
            if key in self._items:
                self._drop(key)
            if self._size(key, raw) > self.max_bytes:
                continue  # an answer larger than the whole cache is not cached
            self._items[key] = (expires, raw)
            self.bytes += self._size(key, raw)
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._items)))

    async def info(self) -> dict[str, Any]:
        return {**await super().info(), "entries": len(self._items), "bytes": self.bytes, "max_bytes": self.max_bytes}


class RedisCache(Cache):
    """Redis-backed cache shared by every worker."""

    backend = "redis"

    def __init__(self, url: str, ttl_seconds: int, *, timeout: float = 0.5, **kwargs: Any) -> None:
        super().__init__(ttl_seconds, **kwargs)
        self.url = url
        self.timeout = timeout
        self.client: Any = None

    async def on_start(self) -> None:
        import redis.asyncio as redis

        self.client = redis.Redis.from_url(self.url, socket_timeout=self.timeout,
                                           socket_connect_timeout=self.timeout)
        try:
            await self.ping()
        except Exception:
            # The worker serves without the cache rather than refusing to start; /health says so.
            logger.warning("redis cache at %s is unreachable: serving without it until it answers", redacted(self.url))
        else:
            logger.info("redis cache ready at %s", redacted(self.url))

    async def on_stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def _ping(self) -> None:
        await self.client.ping()

    async def _get(self, key: str) -> Optional[dict[str, Any]]:
        raw = await self.client.get(key)
        return None if raw is None else json.loads(raw)

    async def _put_many(self, items: dict[str, dict[str, Any]]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for key, value in items.items():
                pipe.set(key, json.dumps(value), ex=self.ttl_seconds)
            await pipe.execute()

    async def info(self) -> dict[str, Any]:
        base = await super().info()
        if self.suspended:
            base["redis_error"] = "unreachable: skipped"
            return base
        try:
            stats = await self.client.info("stats")
            base["redis_keyspace_hits"] = stats.get("keyspace_hits")
            base["redis_keyspace_misses"] = stats.get("keyspace_misses")
        except Exception as exc:
            base["redis_error"] = repr(exc)
        return base


def make_cache(redis_url: str, ttl_seconds: int, *, timeout: float = 0.5, retry_seconds: float = 1.0,
               max_bytes: int = 16 * 2**20) -> Cache:
    """Redis when a URL is configured, otherwise the in-process cache holding at most ``max_bytes``."""
    if redis_url:
        return RedisCache(redis_url, ttl_seconds, timeout=timeout, retry_seconds=retry_seconds)
    return MemoryCache(ttl_seconds, max_bytes=max_bytes)
