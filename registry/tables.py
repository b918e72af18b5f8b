"""Registry tables: models, versions, aliases, releases (traffic, shadow, guard), the history and API tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from modelreg.registry.db import Base

# The largest value of an INTEGER column (PostgreSQL's int4): versions and policy numbers above it are
# refused before they reach SQL, where they would be an overflow error instead of a 404 or a 422.
SQL_INT_MAX = 2**31 - 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class Model(Base):
    __tablename__ = "models"
    # History rows keep the model's id after a deletion, so SQLite must never reuse an id.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    runtime: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    cache_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # NULL means "the server's default TTL"; 0 means "never cache this model".
    cache_ttl_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cache_max_value_bytes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_batch_size: Mapped[int] = mapped_column(Integer, default=16)
    max_delay_ms: Mapped[int] = mapped_column(Integer, default=5)
    device: Mapped[str | None] = mapped_column(String(32), nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    next_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    versions: Mapped[list[Version]] = relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True, order_by="Version.number"
    )
    aliases: Mapped[list[Alias]] = relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True, order_by="Alias.name"
    )
    traffic: Mapped[list[TrafficArm]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="TrafficArm.alias"
    )
    shadow: Mapped[Shadow | None] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    guard: Mapped[GuardRow | None] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class Version(Base):
    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("model_id", "number", name="uq_versions_model_id_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str | None] = mapped_column(String(255), nullable=True)
    signature: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    # The generation this version's cache keys carry while it holds a role (production, a traffic arm,
    # the shadow); NULL: the model's generation. See docs/architecture.md, "warm keys".
    key_generation: Mapped[int | None] = mapped_column(Integer, nullable=True)

    model: Mapped[Model] = relationship(back_populates="versions")


class Alias(Base):
    __tablename__ = "aliases"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    model: Mapped[Model] = relationship(back_populates="aliases")


class HistoryEvent(Base):
    """Append-only: rows outlive their model (no foreign key), so a deletion stays on record."""

    __tablename__ = "history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(Integer, index=True)
    model_name: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    alias: Mapped[str | None] = mapped_column(String(64), nullable=True)
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    generation: Mapped[int | None] = mapped_column(Integer, nullable=True)
    actor: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class TrafficArm(Base):
    """One arm of a model's traffic split: requests to the production route go to ``alias`` by ``weight``."""

    __tablename__ = "traffic_arms"
    __table_args__ = (CheckConstraint("weight >= 0 AND weight <= 100", name="weight"),)

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    weight: Mapped[int] = mapped_column(Integer)


class Shadow(Base):
    """At most one per model: ``version`` also runs ``percent`` % of production requests, answering nobody."""

    __tablename__ = "shadows"
    __table_args__ = (CheckConstraint("percent > 0 AND percent <= 100", name="percent"),)

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    percent: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GuardRow(Base):
    """At most one per model: the guarded promotion of ``version``, which replaced ``replaced``."""

    __tablename__ = "guards"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    replaced: Mapped[int | None] = mapped_column(Integer, nullable=True)
    window_seconds: Mapped[int] = mapped_column(Integer)
    min_requests: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_error_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_p99_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiToken(Base):
    """A bearer token: only the sha256 of its secret is kept. Rows are revoked, never deleted, so a
    name in history always means one token."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint("role IN ('admin', 'reader')", name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
