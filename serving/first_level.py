"""A small in-process LRU in front of Redis, bounded in bytes, each entry with its own expiry.

Its budget is the memory it really takes: every value is kept as an exact-size copy (a result of
``orjson.dumps`` keeps about 4 KB of allocation whatever its length, so 64 MiB of such values
held as they are took several hundred MB), and each entry is charged its value's and key's bytes
plus what its slot, record and object headers measure (tests/serving/test_memory_budget.py).
Keys are kept as the strings they are (a prefix and a 32-digit digest): hashing each one again to
a 16-byte digest saved ~64 bytes an entry but cost every lookup ~0.45 µs, a tenth of the engine's
whole work on an exact repeat.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Callable

# Measured with tracemalloc on CPython 3.11, beyond the value's and the key's own bytes: the entry
# record, its float, the value's bytes and the key's str headers, and the OrderedDict's slot, index
# and link: 217-254 bytes as the table fills and grows. Over-counting only shrinks the budget;
# under-counting lets the process outgrow it, so this keeps a margin (and is what the pending
# writes in cache.py are charged too).
ENTRY_OVERHEAD = 320
_EMPTY_STR = sys.getsizeof("")


def exact_copy(value: bytes) -> bytes:
    """``value`` in a fresh allocation of its own length (``bytes(v)`` and ``v[:]`` return ``v`` itself)."""
    return bytes(memoryview(value))


# An entry is a plain (value, expires_at) tuple, not a class: the collector untracks a tuple of
# bytes and a float, so tens of thousands of entries add nothing to each full GC pass (a slotted
# dataclass instance stays tracked and every pass walks it).
_Entry = tuple[bytes, float]  # (value, expires_at)


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
        """Bytes accounted for by the entries held now (values, keys and per-entry overhead)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> bytes | None:
        """The value if present and not expired; marks it most recently used."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry[1]:
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: str, value: bytes, ttl_seconds: float) -> bytes | None:
        """Store an exact-size copy of ``value`` for ``ttl_seconds``, evicting least recently used entries to fit.

        Returns the bytes it keeps, so a caller holding the value elsewhere too can share them, or
        None when it keeps nothing (no TTL left, or larger than the whole budget).
        """
        return self._put(key, value, ttl_seconds, copy=True)

    def link(self, alias: str, key: str, value: bytes | None = None) -> None:
        """Make ``alias`` answer ``value`` (default: what ``key`` holds), expiring when ``key``'s entry does."""
        entry = self._entries.get(key)
        now = self._clock()
        if entry is None or now >= entry[1]:
            return
        # The same bytes under two keys are held once (the named /predict body is the entry itself).
        shared = value is None or value is entry[0] or value == entry[0]
        self._put(alias, entry[0] if shared else value, entry[1] - now, copy=not shared)

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()
        self._bytes = 0

    def _put(self, key: str, value: bytes | None, ttl_seconds: float, copy: bool) -> bytes | None:
        assert value is not None
        if key in self._entries:
            self._remove(key)
        cost = _cost(key, value)
        if ttl_seconds <= 0 or cost > self._max_bytes:
            return None
        while self._bytes + cost > self._max_bytes:
            self._remove(next(iter(self._entries)))
        kept = exact_copy(value) if copy else value
        self._entries[key] = (kept, self._clock() + ttl_seconds)
        self._bytes += cost
        return kept

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key)
        self._bytes -= _cost(key, entry[0])


def _cost(key: str, value: bytes) -> int:
    # A shared value is charged under each key: the budget errs towards holding less, never more.
    # The key's bytes as the str holds them (one per character for ASCII, more for other text).
    return len(value) + sys.getsizeof(key) - _EMPTY_STR + ENTRY_OVERHEAD
