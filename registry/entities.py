"""Frozen records the registry service returns; ORM rows never leave ``registry/``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

PRODUCTION = "production"


def aware(value: datetime) -> datetime:
    # SQLite hands timestamps back without their zone; they were written in UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class CachePolicy:
    enabled: bool = True
    ttl_seconds: int | None = None
    max_value_bytes: int | None = None


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = 16
    max_delay_ms: int = 5


@dataclass(frozen=True)
class ModelRecord:
    name: str
    runtime: str
    description: str
    tags: dict[str, Any]
    cache: CachePolicy
    batching: BatchPolicy
    device: str | None
    generation: int
    aliases: dict[str, int]
    latest_version: int | None
    created_at: datetime
    updated_at: datetime
    id: int = field(repr=False, default=0)

    @property
    def production(self) -> int | None:
        return self.aliases.get(PRODUCTION)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("id")
        data["production"] = self.production
        data["created_at"] = aware(self.created_at).isoformat()
        data["updated_at"] = aware(self.updated_at).isoformat()
        return data


@dataclass(frozen=True)
class VersionRecord:
    model: str
    version: int
    status: str
    sha256: str
    size_bytes: int
    format: str
    filename: str | None
    signature: dict[str, Any] | None
    metadata: dict[str, Any]
    error: str | None
    created_at: datetime
    created_by: str
    aliases: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["aliases"] = list(self.aliases)
        data["created_at"] = aware(self.created_at).isoformat()
        if data["error"] is None:
            data.pop("error")
        return data


@dataclass(frozen=True)
class HistoryRecord:
    action: str
    alias: str | None
    from_version: int | None
    to_version: int | None
    generation: int | None
    actor: str
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = aware(self.at).isoformat()
        return data


@dataclass(frozen=True)
class ProductionChange:
    """What promote/rollback/purge return: the live version and the new cache generation."""

    model: str
    production: int | None
    generation: int
    previous: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "production": self.production, "generation": self.generation,
                "previous": self.previous}


@dataclass(frozen=True)
class LiveState:
    """What a serving replica needs to know about one model, read in one query."""

    name: str
    runtime: str
    generation: int
    aliases: dict[str, int]
    cache: CachePolicy
    batching: BatchPolicy
    device: str | None


@dataclass(frozen=True)
class TokenRecord:
    """An API token as the registry shows it: never its secret, nor the secret's hash."""

    name: str
    role: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = aware(self.created_at).isoformat()
        data["revoked_at"] = aware(self.revoked_at).isoformat() if self.revoked_at else None
        data["active"] = self.active
        return data
