"""Request bodies of the admin API; unknown fields are refused so typos do not pass silently."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from modelreg.registry import SQL_INT_MAX


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


class Promote(_Body):
    version: int = Field(ge=1, le=SQL_INT_MAX)
    wait_seconds: float | None = Field(default=None, ge=0, le=300, description=WAIT_DESCRIPTION)


class Rollback(_Body):
    version: int | None = Field(default=None, ge=1, le=SQL_INT_MAX)
    wait_seconds: float | None = Field(default=None, ge=0, le=300, description=WAIT_DESCRIPTION)


class AliasSet(_Body):
    version: int = Field(ge=1, le=SQL_INT_MAX)


class TokenCreate(_Body):
    name: str = Field(description="letters, digits, '-', '_', '.'; 1-64 characters; history shows it as the actor")
    role: Literal["admin", "reader"] = Field(default="reader",
                                             description="admin: everything; reader: GET /admin routes only")
