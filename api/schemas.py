"""Request bodies of the admin API; unknown fields are refused so typos do not pass silently."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from modelreg.registry import SQL_INT_MAX, GuardSpec


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelPolicy(_Body):
    description: str | None = Field(default=None, max_length=10_000)
    tags: dict[str, str] | None = None
    cache_enabled: bool | None = None
    cache_ttl_seconds: int | None = Field(default=None, ge=0, le=SQL_INT_MAX,
                                          description="0 = never cache; null = server default")
    cache_max_value_bytes: int | None = Field(default=None, ge=0, le=SQL_INT_MAX,
                                              description="answers larger than this are not cached")
    max_batch_size: int | None = Field(default=None, ge=1, le=4096)
    max_delay_ms: int | None = Field(default=None, ge=0, le=10_000)
    device: str | None = Field(default=None, description="auto, cpu, cuda or cuda:N; null = server default")


class ModelCreate(ModelPolicy):
    name: str = Field(description="letters, digits, '-', '_', '.'; 1-128 characters")
    runtime: str = Field(description="a runtime plugin name, as GET /admin/plugins lists")


WAIT_DESCRIPTION = ("wait up to this many seconds for every live replica to serve the new production version; "
                    "the answer then lists those that do and those that do not, with why")


class Guard(_Body):
    """Limits a guarded promotion must hold over its window; a breach rolls back to the version it replaced."""

    window_seconds: int = Field(default=300, ge=1, le=86_400, description="how long the new version is watched")
    min_requests: int | None = Field(default=None, ge=1, le=SQL_INT_MAX,
                                     description="judge only after this many requests to the new version")
    max_error_rate: float | None = Field(default=None, ge=0, le=1, description="0.01 = 1 % of requests failing")
    max_p99_ms: float | None = Field(default=None, gt=0, le=3_600_000, description="99th percentile latency limit")

    def spec(self) -> GuardSpec:
        return GuardSpec(self.window_seconds, self.min_requests, self.max_error_rate, self.max_p99_ms)


class Promote(_Body):
    version: int = Field(ge=1, le=SQL_INT_MAX)
    wait_seconds: float | None = Field(default=None, ge=0, le=300, description=WAIT_DESCRIPTION)
    guard: Guard | None = Field(default=None, description="watch the new version and roll back on a breach")


class Rollback(_Body):
    version: int | None = Field(default=None, ge=1, le=SQL_INT_MAX)
    wait_seconds: float | None = Field(default=None, ge=0, le=300, description=WAIT_DESCRIPTION)


class AliasSet(_Body):
    version: int = Field(ge=1, le=SQL_INT_MAX)


class TrafficSet(_Body):
    weights: dict[str, StrictInt] = Field(
        description='alias -> whole-number weight, summing to 100, e.g. {"production": 90, "canary": 10}')


class ShadowSet(_Body):
    version: int = Field(ge=1, le=SQL_INT_MAX, description="the version that also runs, answering nobody")
    percent: float = Field(gt=0, le=100, description="share of production requests it also runs")


class TokenCreate(_Body):
    name: str = Field(description="letters, digits, '-', '_', '.'; 1-64 characters; history shows it as the actor")
    role: Literal["admin", "reader"] = Field(default="reader",
                                             description="admin: everything; reader: GET /admin routes only")
