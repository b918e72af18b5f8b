"""What ``modelreg.Client`` takes and returns besides plain JSON: policy fields, guard limits, predict and infer
answers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

Progress = Callable[[int, int | None], None]
"""Called with (bytes sent so far, total bytes or None when the file's size cannot be known)."""


class Policy(TypedDict, total=False):
    """A model's policy fields; only those given are sent (``None`` puts a nullable one back to the default)."""

    description: str | None
    tags: dict[str, str] | None
    cache_enabled: bool | None
    cache_ttl_seconds: int | None
    cache_max_value_bytes: int | None
    max_batch_size: int | None
    max_delay_ms: int | None
    device: str | None


class GuardLimits(TypedDict, total=False):
    """The limits of a guarded promotion; a breach within the window rolls back to the version it replaced."""

    window_seconds: int
    """How long the new version is watched (default 300)."""
    min_requests: int
    """Judge only after this many requests to the new version."""
    max_error_rate: float
    """The largest share of failing requests, 0.01 = 1 %."""
    max_p99_ms: float
    """The largest 99th percentile latency in milliseconds."""


@dataclass(frozen=True)
class Prediction:
    """One predict answer: the outputs, which version computed them and what the cache did."""

    model: str
    version: int
    outputs: Any
    cache: str
    """``hit``, ``miss``, ``coalesced`` or ``bypass`` (the X-Cache header)."""
    body: bytes = field(repr=False, compare=False)
    """The response body exactly as the server sent it."""


@dataclass(frozen=True)
class Inference:
    """One V2 infer answer: output tensors as the protocol gives them (``name``, ``datatype``, ``shape``, ``data``)."""

    model: str
    version: int
    outputs: list[dict[str, Any]]
    cache: str
    id: str | None = None

    def output(self, name: str) -> dict[str, Any]:
        """The output tensor called ``name``; KeyError naming the ones there are otherwise."""
        for tensor in self.outputs:
            if tensor.get("name") == name:
                return tensor
        raise KeyError(f"no output {name!r}; this answer has {[t.get('name') for t in self.outputs]}")
