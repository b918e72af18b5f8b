"""The embedded default's stand-in for Redis: fakeredis's in-process server, bounded in bytes.

Without ``MODELREG_REDIS_URL`` the cache runs on fakeredis in this process, and fakeredis keeps
every key until its TTL: 40,000 distinct inputs grew a server by 60 MiB. Here its keyspace gets
a byte budget: a key written with a TTL (every prediction and lease is) is charged its value,
its key and what fakeredis holds beside them, and the least recently used such keys are evicted
past the budget, as Redis's own ``maxmemory-policy volatile-lru`` does. Keys without a TTL are
never evicted (the server writes none to the cache).
"""

from __future__ import annotations

import heapq
import threading
from collections import OrderedDict, defaultdict
from typing import Any

from fakeredis import FakeServer
from fakeredis._core._database import Database

# Measured with tracemalloc on CPython 3.11: ~360 bytes a key beside its name and value (the keyspace
# slot, fakeredis's Item, the bytes headers, an expiry-heap entry, this ledger's slot), ~470 under
# eviction churn (fakeredis lets stale expiry-heap entries pile up to two a key); the high end, rounded up.
KEY_OVERHEAD = 512


def bounded_server(max_bytes: int) -> FakeServer:
    """A fakeredis server whose every database holds at most ``max_bytes`` of keys with a TTL."""
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    server = FakeServer()
    server.dbs = defaultdict(lambda: BoundedDatabase(server.lock, max_bytes))
    return server


class BoundedDatabase(Database):
    """fakeredis's keyspace with a least-recently-used ledger of the keys that carry a TTL."""

    def __init__(self, lock: threading.Lock | None, max_bytes: int) -> None:
        super().__init__(lock)
        self.max_bytes = max_bytes
        self.size_bytes = 0
        # Its own order, apart from the keyspace: fakeredis iterates the keyspace, and reordering
        # it under an iteration would break that.
        self._ledger: OrderedDict[bytes, int] = OrderedDict()

    def schedule_expiry(self, key: bytes, expireat: float | None) -> None:
        # fakeredis calls this after every write that sets or clears a key's TTL (SET EX/PX,
        # EXPIRE, PERSIST, SET without one): the moment the key's size and TTL are both known.
        super().schedule_expiry(key, expireat)
        self._forget(key)
        item = self._dict.get(key)
        if expireat is None or item is None or not isinstance(item.value, bytes):
            return
        cost = len(key) + len(item.value) + KEY_OVERHEAD
        self._ledger[key] = cost
        self.size_bytes += cost
        while self.size_bytes > self.max_bytes and self._ledger:
            oldest, oldest_cost = self._ledger.popitem(last=False)
            self.size_bytes -= oldest_cost
            self._evict(oldest)

    def __getitem__(self, key: bytes) -> Any:
        try:
            item = super().__getitem__(key)
        except KeyError:
            self._forget(key)
            raise
        if key in self._ledger:
            self._ledger.move_to_end(key)
        return item

    def __delitem__(self, key: bytes) -> None:
        super().__delitem__(key)
        self._forget(key)

    def _remove_expired(self) -> None:
        # fakeredis's own, plus the ledger: its ``del self._dict[key]`` would bypass ``__delitem__``.
        heap = self._expiry_heap
        while heap and heap[0][0] < self.time:
            _, key = heapq.heappop(heap)
            item = self._dict.get(key)
            if item is not None and self.expired(item):
                del self._dict[key]
                self._forget(key)

    def clear(self) -> None:
        super().clear()
        self._ledger.clear()
        self.size_bytes = 0

    def swap(self, other: Database) -> None:
        super().swap(other)
        if isinstance(other, BoundedDatabase):
            self._ledger, other._ledger = other._ledger, self._ledger
            self.size_bytes, other.size_bytes = other.size_bytes, self.size_bytes
        else:
            self._ledger, self.size_bytes = OrderedDict(), 0

    def _evict(self, key: bytes) -> None:
        if self._dict.pop(key, None) is not None:
            self.notify_watch(key)  # a WATCH on an evicted key must fail, as on Redis

    def _forget(self, key: bytes) -> None:
        cost = self._ledger.pop(key, None)
        if cost is not None:
            self.size_bytes -= cost
