"""Which arm of a model's traffic split answers one request: sticky by request key, random otherwise.

A split is ``{alias: weight}`` with integer weights summing to 100 (the registry checks that).
Each request gets a point in [0, 100): a stable hash of the model and its ``X-Request-Key`` when it
sends one (the same key lands on the same arm on every replica, for as long as the split holds),
a random one otherwise. The arms own consecutive ranges of points in alias order, so the layout
depends only on the split itself, never on the order a replica happened to read it in.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from functools import lru_cache

from modelreg.registry import PRODUCTION, LiveState

POINTS = 100


def point_of(model: str, request_key: str) -> int:
    """The stable point in [0, 100) of ``request_key`` for ``model`` (same on every replica and every run)."""
    digest = hashlib.blake2b(f"{model}\x00{request_key}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % POINTS


@lru_cache(maxsize=1024)
def _bounds(split: tuple[tuple[str, int], ...]) -> tuple[tuple[int, str], ...]:
    """(upper bound, alias) per arm, in alias order: computed once per distinct split."""
    bounds: list[tuple[int, str]] = []
    upto = 0
    for alias, weight in sorted(split):
        if weight > 0:
            upto += weight
            bounds.append((upto, alias))
    return tuple(bounds)


def choose_arm(model: str, weights: Mapping[str, int], request_key: str | None,
               draw: Callable[[int], int] = random.randrange) -> str:
    """The alias whose arm answers this request; ``draw(100)`` picks the point of a request without a key."""
    point = point_of(model, request_key) if request_key is not None else draw(POINTS)
    for upto, alias in _bounds(tuple(weights.items())):
        if point < upto:
            return alias
    return PRODUCTION  # weights short of 100 (never from the registry): the rest is production's


def arm_of(state: LiveState, request_key: str | None) -> str | None:
    """The alias of the arm that answers a production-route request of ``state``'s model, or None for
    production itself (no split, the production arm, or an arm whose alias is gone)."""
    if not state.traffic:
        return None
    alias = choose_arm(state.name, state.traffic, request_key)
    return alias if alias != PRODUCTION and alias in state.aliases else None
