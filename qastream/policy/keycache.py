"""What a worker remembers about API keys between requests: recent lookups, and when it last recorded a use.

A lookup per request would be one indexed read per request; remembering it
for ``ttl`` seconds (``QASTREAM_AUTH_CACHE_SECONDS``, at most 0.9) saves
those reads and still lets a revocation reach every worker within a second.
Unknown hashes are remembered too, so a client retrying a wrong key does not
cost a read each time; the number of entries is bounded, so a client
sending random keys cannot grow the worker's memory.

Time is passed in, so the expiry and the bound are tested without waiting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Optional, TypeVar

T = TypeVar("T")

#: Most key hashes remembered at once; past it the oldest go first.
MAX_ENTRIES = 10_000


@dataclass
class KeyCache(Generic[T]):
    """Key hash -> what the database said of it (``None``: no such key), for ``ttl`` seconds."""

    ttl: float
    touch_every: float = 60.0
    max_entries: int = MAX_ENTRIES
    entries: dict[str, tuple[float, Optional[T]]] = field(default_factory=dict)
    touched: dict[int, float] = field(default_factory=dict)

    def get(self, key_hash: str, now: float) -> tuple[bool, Optional[T]]:
        """``(True, value)`` when a lookup of ``key_hash`` is fresh, else ``(False, None)``."""
        entry = self.entries.get(key_hash)
        if entry is None or entry[0] <= now:
            return False, None
        return True, entry[1]

    def put(self, key_hash: str, value: Optional[T], now: float) -> None:
        """Remember a lookup until ``now + ttl`` (not at all when ``ttl`` is 0)."""
        if self.ttl <= 0:
            return
        if key_hash not in self.entries and len(self.entries) >= self.max_entries:
            self.entries = {h: e for h, e in self.entries.items() if e[0] > now}
            while len(self.entries) >= self.max_entries:
                del self.entries[next(iter(self.entries))]  # dicts keep insertion order: the oldest
        self.entries.pop(key_hash, None)
        self.entries[key_hash] = (now + self.ttl, value)

    def due_touch(self, key_id: int, now: float) -> bool:
        """Whether to record a use of the key now: once per ``touch_every`` seconds per key and worker."""
        if now - self.touched.get(key_id, float("-inf")) < self.touch_every:
            return False
        self.touched[key_id] = now
        return True
