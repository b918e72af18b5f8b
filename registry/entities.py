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
    reason: str | None = None
    """Why, in words: what a traffic or shadow change set, or which limit a guard saw broken."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = aware(self.at).isoformat()
        if data["reason"] is None:
            data.pop("reason")
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
    traffic: dict[str, int] | None = None
    """alias -> integer weight (summing to 100); None: every request goes to production."""
    shadow: ShadowSetting | None = None
    guard: Guard | None = None
    """The guard watching the production version, while its window lasts."""
    key_generations: dict[int, int] = field(default_factory=dict)
    """version -> the generation its cache keys carry (``key_generations.get(version, generation)``)."""

    def key_generation(self, version: int) -> int:
        """The generation ``version``'s cache keys carry: its pin, else the model's generation."""
        return self.key_generations.get(version, self.generation)


@dataclass(frozen=True)
class TrafficSplit:
    """How the production route's requests are shared among aliases: alias -> weight, summing to 100."""

    model: str
    weights: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "weights": dict(self.weights)}


@dataclass(frozen=True)
class ShadowSetting:
    """A version that also runs ``percent`` % of production requests in the background, answering nobody."""

    model: str
    version: int
    percent: float

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "percent": self.percent}


@dataclass(frozen=True)
class GuardSpec:
    """The limits a guarded promotion must hold over its window (each optional; at least one rate or latency)."""

    window_seconds: int = 300
    min_requests: int | None = None
    max_error_rate: float | None = None
    max_p99_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Guard:
    """A guarded promotion in progress: a breach before ``ends_at`` rolls production back to ``replaced``."""

    model: str
    version: int
    replaced: int | None
    spec: GuardSpec
    started_at: datetime
    ends_at: datetime

    def active(self, now: datetime) -> bool:
        return aware(now) < aware(self.ends_at)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "replaced": self.replaced, "spec": self.spec.to_dict(),
                "started_at": aware(self.started_at).isoformat(), "ends_at": aware(self.ends_at).isoformat()}


@dataclass(frozen=True)
class ReleaseState:
    """A model's traffic split, shadow and active guard, read together (GET /admin/models/{name})."""

    traffic: TrafficSplit | None
    shadow: ShadowSetting | None
    guard: Guard | None

    def to_dict(self) -> dict[str, Any]:
        return {"traffic": self.traffic.to_dict() if self.traffic else None,
                "shadow": self.shadow.to_dict() if self.shadow else None,
                "guard": self.guard.to_dict() if self.guard else None}


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
