"""A small in-process LRU in front of Redis, bounded in bytes, each entry with its own expiry."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# Rough per-entry cost of the dict slot, tuple and objects, so a flood of tiny values is bounded too.
_ENTRY_OVERHEAD = 96


@dataclass(frozen=True, slots=True)
class _Entry:
    value: bytes
    expires_at: float
    cost: int


class FirstLevel:
    """LRU of response bytes by cache key; never serves an entry past its TTL."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, clock: Callable[[], float] = time.monotonic) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        """Bytes accounted for by the entries held now (values, keys and overhead)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> bytes | None:
        """The value if present and not expired; marks it most recently used."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry.expires_at:
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry.value

    def put(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """Store ``value`` for ``ttl_seconds``, evicting least recently used entries to fit."""
        if key in self._entries:
            self._remove(key)
        cost = len(value) + len(key) + _ENTRY_OVERHEAD
        if ttl_seconds <= 0 or cost > self._max_bytes:
            return
        while self._bytes + cost > self._max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
        self._entries[key] = _Entry(value, self._clock() + ttl_seconds, cost)
        self._bytes += cost

    def link(self, alias: str, key: str, value: bytes | None = None) -> None:
        """Make ``alias`` answer ``value`` (default: what ``key`` holds), expiring when ``key``'s entry does."""
        entry = self._entries.get(key)
        if entry is None or self._clock() >= entry.expires_at:
            return
        self.put(alias, entry.value if value is None else value, entry.expires_at - self._clock())

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()
        self._bytes = 0

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.cost
