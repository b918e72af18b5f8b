"""What a call to the engine takes and gives back: ``CacheControl`` in, ``Prediction`` or ``Inference`` out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """The response bytes, the version that answered them and what the cache did."""

    body: bytes
    version: int
    cache_status: str


@dataclass(frozen=True)
class Inference:
    """Named output arrays, the version that computed them and what the cache did (for V2)."""

    outputs: dict[str, np.ndarray]
    version: int
    cache_status: str


@dataclass(frozen=True)
class CacheControl:
    """What the client allows: ``no-cache`` skips the read, ``no-store`` the write."""

    read: bool = True
    write: bool = True

    @classmethod
    def parse(cls, header: str | None) -> CacheControl:
        """The directives of a ``Cache-Control`` request header (others are ignored)."""
        if not header:
            return cls()
        directives = {d.strip().lower() for d in header.split(",")}
        return cls(read="no-cache" not in directives, write="no-store" not in directives)


ANY_CACHE = CacheControl()  # no header: read and keep shared answers

