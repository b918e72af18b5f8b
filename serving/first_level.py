"""A small in-process LRU in front of Redis, bounded in bytes, each entry with its own expiry.

Its budget is the memory it really takes: every value is kept as an exact-size copy (a result of
``orjson.dumps`` keeps about 4 KB of allocation whatever its length, so 64 MiB of such values
held as they are took several hundred MB), keys are kept as 16-byte digests, and each entry is
charged what its slot, record and object headers measure (tests/serving/test_memory_budget.py).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# Measured with tracemalloc on CPython 3.11: the entry record, its float, the 16-byte key digest
# and the value's bytes header (~155 bytes), and the OrderedDict's slot, index and link (~115 bytes
# just after the table grew, ~175 just before it grows again). Over-counting only shrinks the
# budget; under-counting lets the process outgrow it, so this takes the high end.
ENTRY_OVERHEAD = 320


def exact_copy(value: bytes) -> bytes:
    """``value`` in a fresh allocation of its own length (``bytes(v)`` and ``v[:]`` return ``v`` itself)."""
    return bytes(memoryview(value))


def _short(key: str) -> bytes:
    # Keys are ~70-character strings; a 16-byte digest holds the same identity in a third of the room.
    return hashlib.blake2b(key.encode(), digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class _Entry:
    value: bytes
    expires_at: float


class FirstLevel:
    """LRU of response bytes by cache key; never serves an entry past its TTL."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, clock: Callable[[], float] = time.monotonic) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        """Bytes accounted for by the entries held now (values, keys and per-entry overhead)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> bytes | None:
        """The value if present and not expired; marks it most recently used."""
        short = _short(key)
        entry = self._entries.get(short)
        if entry is None:
            return None
        if self._clock() >= entry.expires_at:
            self._remove(short)
            return None
        self._entries.move_to_end(short)
        return entry.value

    def put(self, key: str, value: bytes, ttl_seconds: float) -> bytes | None:
        """Store an exact-size copy of ``value`` for ``ttl_seconds``, evicting least recently used entries to fit.

        Returns the bytes it keeps, so a caller holding the value elsewhere too can share them, or
        None when it keeps nothing (no TTL left, or larger than the whole budget).
        """
        return self._put(_short(key), value, ttl_seconds, copy=True)

    def link(self, alias: str, key: str, value: bytes | None = None) -> None:
        """Make ``alias`` answer ``value`` (default: what ``key`` holds), expiring when ``key``'s entry does."""
        entry = self._entries.get(_short(key))
        now = self._clock()
        if entry is None or now >= entry.expires_at:
            return
        # The same bytes under two keys are held once (the named /predict body is the entry itself).
        shared = value is None or value is entry.value or value == entry.value
        self._put(_short(alias), entry.value if shared else value, entry.expires_at - now, copy=not shared)

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()
        self._bytes = 0

    def _put(self, short: bytes, value: bytes | None, ttl_seconds: float, copy: bool) -> bytes | None:
        assert value is not None
        if short in self._entries:
            self._remove(short)
        cost = _cost(value)
        if ttl_seconds <= 0 or cost > self._max_bytes:
            return None
        while self._bytes + cost > self._max_bytes:
            self._remove(next(iter(self._entries)))
        kept = exact_copy(value) if copy else value
        self._entries[short] = _Entry(kept, self._clock() + ttl_seconds)
        self._bytes += cost
        return kept

    def _remove(self, short: bytes) -> None:
        entry = self._entries.pop(short)
        self._bytes -= _cost(entry.value)


def _cost(value: bytes) -> int:
    # A shared value is charged under each key: the budget errs towards holding less, never more.
    return len(value) + ENTRY_OVERHEAD
