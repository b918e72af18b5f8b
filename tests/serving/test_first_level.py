"""The first level is an LRU bounded in bytes whose entries never outlive their TTL."""

from __future__ import annotations

from modelreg.serving.first_level import ENTRY_OVERHEAD, FirstLevel


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_get_returns_what_was_put() -> None:
    cache = FirstLevel(max_bytes=10_000)
    cache.put("k", b"v", ttl_seconds=10)
    assert cache.get("k") == b"v"
    assert cache.get("other") is None


def test_evicts_least_recently_used_to_stay_under_its_byte_budget() -> None:
    value = b"x" * 300
    budget = 2 * (len(value) + ENTRY_OVERHEAD) + 100  # two entries fit, a third does not
    cache = FirstLevel(max_bytes=budget)
    cache.put("a", value, 10)
    cache.put("b", value, 10)
    assert cache.get("a") == value  # "a" is now the most recently used
    cache.put("c", value, 10)
    assert cache.get("b") is None
    assert cache.get("a") == value and cache.get("c") == value
    assert cache.size_bytes <= budget and len(cache) == 2


def test_a_value_larger_than_the_budget_is_not_kept() -> None:
    cache = FirstLevel(max_bytes=1000)
    cache.put("small", b"s", 10)
    cache.put("huge", b"x" * 2000, 10)
    assert cache.get("huge") is None
    assert cache.get("small") == b"s"


def test_entries_expire_at_their_own_ttl() -> None:
    clock = FakeClock()
    cache = FirstLevel(max_bytes=10_000, clock=clock)
    cache.put("short", b"1", ttl_seconds=1)
    cache.put("long", b"2", ttl_seconds=5)
    clock.now = 0.999
    assert cache.get("short") == b"1"
    clock.now = 1.0
    assert cache.get("short") is None
    assert cache.get("long") == b"2"
    clock.now = 5.0
    assert cache.get("long") is None
    assert len(cache) == 0 and cache.size_bytes == 0


def test_zero_ttl_is_not_stored_and_replacing_a_key_keeps_the_accounting() -> None:
    cache = FirstLevel(max_bytes=10_000)
    cache.put("k", b"v", ttl_seconds=0)
    assert cache.get("k") is None
    cache.put("k", b"a" * 100, 10)
    cache.put("k", b"b", 10)
    assert cache.get("k") == b"b" and len(cache) == 1
    cache.clear()
    assert cache.get("k") is None and cache.size_bytes == 0


def test_a_linked_alias_with_the_same_bytes_shares_the_entry_value() -> None:
    cache = FirstLevel(max_bytes=10_000)
    kept = cache.put("key", b'{"outputs":[1]}', 10)
    cache.link("alias", "key", b'{"outputs":[1]}')
    assert cache.get("alias") is kept and cache.get("key") is kept
    cache.link("other", "key", b'{"other":1}')
    assert cache.get("other") == b'{"other":1}'
