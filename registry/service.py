"""RegistryService: every change to the registry is one method and one SQL transaction."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from modelreg.names import is_alias, is_model_name, is_runtime_name
from modelreg.registry.artifacts import ArtifactStore, StoredArtifact
from modelreg.registry.db import ping, transaction
from modelreg.registry.entities import (
    PRODUCTION,
    BatchPolicy,
    CachePolicy,
    GuardSpec,
    HistoryRecord,
    LiveState,
    ModelRecord,
    ProductionChange,
    VersionRecord,
    aware,
)
from modelreg.registry.errors import Conflict, Invalid, NoProductionVersion, NotFound
from modelreg.registry.history import record
from modelreg.registry.releases import (
    ReleaseMethods,
    after_production_move,
    check_guard,
    guard_of,
    refuse_alias_in_split,
    shadow_of,
    sync_pins,
    traffic_of,
)
from modelreg.registry.tables import SQL_INT_MAX, Alias, HistoryEvent, Model, Version, utcnow

POLICY_FIELDS = frozenset(
    {"description", "tags", "cache_enabled", "cache_ttl_seconds", "cache_max_value_bytes",
     "max_batch_size", "max_delay_ms", "device"}
)
# Null sets these back to the server default; for the others null leaves the value alone.
NULLABLE_POLICY = frozenset({"cache_ttl_seconds", "cache_max_value_bytes", "device"})


@dataclass(frozen=True)
class Validated:
    """What validating an upload found: its format, its signature, or why it cannot serve."""

    format: str
    signature: dict[str, Any] | None
    error: str | None = None


class Validator(Protocol):
    """Loads a stored artifact with the model's runtime and runs a smoke inference."""

    def __call__(self, runtime: str, artifact: StoredArtifact, filename: str | None,
                 metadata: Mapping[str, Any], device: str | None) -> Validated: ...


def check_name(name: str) -> str:
    if not is_model_name(name):
        raise Invalid(
            f"invalid model name {name!r}: use 1-128 letters, digits, '-', '_' or '.' (no spaces or slashes)"
        )
    return name


def _check_alias(alias: str) -> str:
    if not is_alias(alias):
        raise Invalid(f"invalid alias {alias!r}: use 1-64 letters, digits, '-', '_' or '.'")
    return alias


def _is_unicode(text: str) -> bool:
    """False for a str holding a lone surrogate (JSON's "\\ud800" parses into one): it cannot be stored."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_policy(changes: Mapping[str, Any]) -> None:
    unknown = set(changes) - POLICY_FIELDS
    if unknown:
        raise Invalid(f"unknown field(s) {sorted(unknown)}; a model's policy has {sorted(POLICY_FIELDS)}")
    for key in ("cache_ttl_seconds", "cache_max_value_bytes"):
        if changes.get(key) is not None and not 0 <= changes[key] <= SQL_INT_MAX:
            raise Invalid(f"{key} must be between 0 and {SQL_INT_MAX} (0 turns caching off)")
    # null leaves these as they are (update_model skips it): only a number is checked.
    if changes.get("max_batch_size") is not None and not 1 <= changes["max_batch_size"] <= 4096:
        raise Invalid("max_batch_size must be between 1 and 4096")
    if changes.get("max_delay_ms") is not None and not 0 <= changes["max_delay_ms"] <= 10_000:
        raise Invalid("max_delay_ms must be between 0 and 10000")
    tags = changes.get("tags") or {}
    texts = [changes.get("description") or "", *tags, *tags.values()]
    if any(isinstance(t, str) and not _is_unicode(t) for t in texts):
        raise Invalid("description and tags must be valid Unicode text (a lone surrogate such as \\udc80 is not)")
    device = changes.get("device")
    if device is not None and not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise Invalid(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")


def _model_record(row: Model) -> ModelRecord:
    return ModelRecord(
        id=row.id, name=row.name, runtime=row.runtime, description=row.description, tags=dict(row.tags or {}),
        cache=CachePolicy(row.cache_enabled, row.cache_ttl_seconds, row.cache_max_value_bytes),
        batching=BatchPolicy(row.max_batch_size, row.max_delay_ms), device=row.device,
        generation=row.generation, aliases={a.name: a.version for a in row.aliases},
        latest_version=row.next_version - 1 or None, created_at=aware(row.created_at), updated_at=aware(row.updated_at),
    )


def _version_record(model: Model, row: Version) -> VersionRecord:
    return VersionRecord(
        model=model.name, version=row.number, status=row.status, sha256=row.sha256, size_bytes=row.size_bytes,
        format=row.format, filename=row.filename, signature=row.signature, metadata=dict(row.meta or {}),
        error=row.error, created_at=aware(row.created_at), created_by=row.created_by,
        aliases=tuple(a.name for a in model.aliases if a.version == row.number),
    )


def _history_record(row: HistoryEvent) -> HistoryRecord:
    return HistoryRecord(action=row.action, alias=row.alias, from_version=row.from_version,
                         to_version=row.to_version, generation=row.generation, actor=row.actor, at=aware(row.at),
                         reason=row.reason)


class RegistryService(ReleaseMethods):
    """The source of truth for models, versions, aliases, generations, releases and history."""

    def __init__(self, sessions: sessionmaker[Session], artifacts: ArtifactStore,
                 validator: Validator | None = None, max_artifact_bytes: int = 2 * 1024**3,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self._sessions = sessions
        self.artifacts = artifacts
        self._validator = validator
        self.max_artifact_bytes = max_artifact_bytes
        self._clock = clock  # when guards start and end (tests move it)

    def _now(self) -> datetime:
        return self._clock()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        # Every public method reads and writes through here: a database outage becomes Unavailable.
        with transaction(self._sessions) as session:
            yield session

    def ping(self) -> None:
        """One round trip to the database (readiness); Unavailable when it does not answer."""
        ping(self._sessions)

    def _model(self, session: Session, name: str, *, lock: bool = False) -> Model:
        query = select(Model).where(Model.name == name).options(selectinload(Model.aliases))
        if lock:
            query = query.with_for_update()
        row = session.scalars(query).one_or_none()
        if row is None:
            raise NotFound("model", name)
        return row

    def _version(self, session: Session, model: Model, number: int) -> Version:
        if not 1 <= number <= SQL_INT_MAX:  # no such version; SQL would call it an overflow
            raise NotFound("version", model.name, number)
        row = session.scalars(
            select(Version).where(Version.model_id == model.id, Version.number == number)
        ).one_or_none()
        if row is None:
            raise NotFound("version", model.name, number)
        return row

    @staticmethod
    def _record(session: Session, model: Model, action: str, actor: str, *, alias: str | None = None,
                from_version: int | None = None, to_version: int | None = None) -> None:
        record(session, model, action, actor, alias=alias, from_version=from_version, to_version=to_version)

    # models -------------------------------------------------------------------------------

    def create_model(self, name: str, runtime: str, *, actor: str, **policy: Any) -> ModelRecord:
        """Register a model; its name is unique (a duplicate is a Conflict, never a second row)."""
        check_name(name)
        if not is_runtime_name(runtime):
            raise Invalid(f"invalid runtime name {runtime!r}")
        policy = {k: v for k, v in policy.items() if v is not None}
        _check_policy(policy)
        try:
            with self._tx() as session:
                row = Model(name=name, runtime=runtime, **policy)
                row.description = policy.get("description", "")
                row.tags = policy.get("tags", {})
                session.add(row)
                session.flush()
                self._record(session, row, "create", actor)
                session.refresh(row, ["aliases"])
                return _model_record(row)
        except IntegrityError as exc:
            raise Conflict(f"a model named {name!r} already exists; pick another name or update it") from exc

    def list_models(self) -> list[ModelRecord]:
        with self._tx() as session:
            rows = session.scalars(select(Model).options(selectinload(Model.aliases)).order_by(Model.name))
            return [_model_record(r) for r in rows]

    def get_model(self, name: str) -> ModelRecord:
        with self._tx() as session:
            return _model_record(self._model(session, name))

    def update_model(self, name: str, changes: Mapping[str, Any], *, actor: str) -> ModelRecord:
        """Change a model's description, tags, cache or batching policy, or device."""
        _check_policy(changes)
        with self._tx() as session:
            row = self._model(session, name, lock=True)
            for key, value in changes.items():
                if value is None and key not in NULLABLE_POLICY:
                    continue  # null means "leave as is" for fields that cannot be empty
                setattr(row, key, value)
            self._record(session, row, "update", actor)
            session.flush()
            return _model_record(row)

    def delete_model(self, name: str, *, actor: str) -> None:
        """Remove a model with its versions and aliases; the history keeps the deletion."""
        with self._tx() as session:
            row = self._model(session, name, lock=True)
            live = next((a.version for a in row.aliases if a.name == PRODUCTION), None)
            self._record(session, row, "delete", actor, from_version=live)
            session.delete(row)

    # versions -----------------------------------------------------------------------------

    def upload_version(self, name: str, stream: BinaryIO, *, filename: str | None,
                       metadata: Mapping[str, Any], actor: str) -> VersionRecord:
        """Store the artifact by sha256, validate it with the runtime, then number it."""
        runtime, device = self._runtime_of(name)
        stored = self.artifacts.put(stream, self.max_artifact_bytes)
        if self._validator is None:
            outcome = Validated(format=str(metadata.get("format") or "unknown"), signature=metadata.get("signature"))
        else:
            outcome = self._validator(runtime, stored, filename, metadata, device)
        free = {k: v for k, v in metadata.items() if k not in ("signature", "format")}
        with self._tx() as session:
            model = self._model(session, name, lock=True)
            number = model.next_version
            model.next_version = number + 1
            row = Version(model_id=model.id, number=number, sha256=stored.sha256, size_bytes=stored.size_bytes,
                          format=outcome.format, filename=filename, signature=outcome.signature, meta=free,
                          status="failed" if outcome.error else "ready", error=outcome.error, created_by=actor)
            session.add(row)
            session.flush()
            return _version_record(model, row)

    def _runtime_of(self, name: str) -> tuple[str, str | None]:
        with self._tx() as session:
            model = self._model(session, name)
            return model.runtime, model.device

    def list_versions(self, name: str) -> list[VersionRecord]:
        with self._tx() as session:
            model = self._model(session, name)
            rows = session.scalars(select(Version).where(Version.model_id == model.id).order_by(Version.number))
            return [_version_record(model, r) for r in rows]

    def get_version(self, name: str, number: int) -> VersionRecord:
        with self._tx() as session:
            model = self._model(session, name)
            return _version_record(model, self._version(session, model, number))

    def resolve(self, name: str, *, version: int | None = None, alias: str | None = None) -> VersionRecord:
        """The version a request names: a number, an alias, or (neither) the production alias."""
        with self._tx() as session:
            model = self._model(session, name)
            if version is None:
                alias = alias or PRODUCTION
                target = next((a.version for a in model.aliases if a.name == alias), None)
                if target is None:
                    if alias == PRODUCTION:
                        raise NoProductionVersion(name)
                    raise NotFound("alias", name, alias)
                version = target
            return _version_record(model, self._version(session, model, version))

    # production, aliases, cache generation ------------------------------------------------

    def _ready_version(self, session: Session, model: Model, number: int) -> Version:
        row = self._version(session, model, number)
        if row.status != "ready":
            raise Conflict(f"version {number} of {model.name!r} failed validation and cannot serve: {row.error}")
        return row

    def _move_production(self, session: Session, model: Model, target: int, action: str, actor: str, *,
                         reason: str | None = None, guard: GuardSpec | None = None) -> ProductionChange:
        current = next((a for a in model.aliases if a.name == PRODUCTION), None)
        previous = current.version if current else None
        if current is None:
            model.aliases.append(Alias(model_id=model.id, name=PRODUCTION, version=target))
        else:
            current.version = target
        model.generation += 1
        record(session, model, action, actor, alias=PRODUCTION, from_version=previous, to_version=target,
               reason=reason)
        after_production_move(session, model, target, actor, guard=guard, replaced=previous, now=self._now())
        return ProductionChange(model=model.name, production=target, generation=model.generation,
                                previous=previous)

    def promote(self, name: str, version: int, *, actor: str, guard: GuardSpec | None = None) -> ProductionChange:
        """Move production to ``version``, bump the cache generation and record it, atomically.

        With ``guard``, the promotion is watched for ``guard.window_seconds`` and rolled back to the
        version it replaced when a limit breaks (``guard_rollback``). Promoting the live version
        again changes nothing, guard included.
        """
        if guard is not None:
            check_guard(guard)
        with self._tx() as session:
            model = self._model(session, name, lock=True)
            self._ready_version(session, model, version)
            live = next((a.version for a in model.aliases if a.name == PRODUCTION), None)
            if live == version:
                return ProductionChange(model=name, production=version, generation=model.generation, previous=live)
            if guard is not None and live is None:
                raise Invalid(f"a guard rolls back to the version a promotion replaced, and {name!r} has no "
                              "production version yet: promote this first one without a guard")
            return self._move_production(session, model, version, "promote", actor, guard=guard)

    def rollback(self, name: str, version: int | None = None, *, actor: str) -> ProductionChange:
        """Return production to the version live before the current one (or to ``version``)."""
        with self._tx() as session:
            model = self._model(session, name, lock=True)
            live = next((a.version for a in model.aliases if a.name == PRODUCTION), None)
            if version is None:
                stack = self._production_stack(session, model)
                if not stack:
                    raise Conflict(f"model {name!r} has no earlier production version to roll back to")
                version = stack[-1]
            if version == live:
                raise Conflict(f"version {version} of {name!r} is already in production")
            self._ready_version(session, model, version)
            return self._move_production(session, model, version, "rollback", actor)

    def rollback_target(self, name: str) -> int | None:
        """The version a plain ``rollback`` would return to now (None: nothing to roll back to)."""
        with self._tx() as session:
            stack = self._production_stack(session, self._model(session, name))
            return stack[-1] if stack else None

    @staticmethod
    def _production_stack(session: Session, model: Model) -> list[int]:
        """Versions a plain rollback walks back through: promotions push, rollbacks pop."""
        events = session.scalars(
            select(HistoryEvent).where(HistoryEvent.model_id == model.id, HistoryEvent.alias == PRODUCTION,
                                       HistoryEvent.action.in_(("promote", "rollback")))
            .order_by(HistoryEvent.id)
        )
        stack: list[int] = []
        for event in events:
            if event.action == "promote" and event.from_version is not None:
                stack.append(event.from_version)
            elif event.action == "rollback" and event.to_version in stack:
                del stack[len(stack) - 1 - stack[::-1].index(event.to_version):]
        return stack

    def set_alias(self, name: str, alias: str, version: int, *, actor: str) -> ModelRecord:
        """Point a free alias (``staging``, ``canary`` …) at a ready version."""
        _check_alias(alias)
        if alias == PRODUCTION:
            raise Invalid("the production alias moves only through /promote and /rollback, "
                          "which also renew the cache generation and record history")
        with self._tx() as session:
            model = self._model(session, name, lock=True)
            self._ready_version(session, model, version)
            row = next((a for a in model.aliases if a.name == alias), None)
            previous = row.version if row else None
            if row is None:
                model.aliases.append(Alias(model_id=model.id, name=alias, version=version))
            else:
                row.version = version
            self._record(session, model, "alias", actor, alias=alias, from_version=previous, to_version=version)
            sync_pins(session, model)  # an alias of the split now sends its share to another version
            session.flush()
            return _model_record(model)

    def delete_alias(self, name: str, alias: str, *, actor: str) -> None:
        if alias == PRODUCTION:
            raise Invalid("the production alias cannot be deleted; promote or roll back instead")
        with self._tx() as session:
            model = self._model(session, name, lock=True)
            row = next((a for a in model.aliases if a.name == alias), None)
            if row is None:
                raise NotFound("alias", name, alias)
            refuse_alias_in_split(model, alias)
            self._record(session, model, "alias_delete", actor, alias=alias, from_version=row.version)
            model.aliases.remove(row)

    def purge_cache(self, name: str, *, actor: str) -> ProductionChange:
        """Invalidate every cached answer of a model in O(1): a new cache generation."""
        with self._tx() as session:
            model = self._model(session, name, lock=True)
            model.generation += 1
            live = next((a.version for a in model.aliases if a.name == PRODUCTION), None)
            self._record(session, model, "purge", actor, from_version=live, to_version=live)
            sync_pins(session, model, repin=True)  # warm answers of every pinned version go too
            return ProductionChange(model=name, production=live, generation=model.generation, previous=live)

    def history(self, name: str) -> list[HistoryRecord]:
        """Every change to a model, oldest first."""
        with self._tx() as session:
            model = self._model(session, name)
            rows = session.scalars(select(HistoryEvent).where(HistoryEvent.model_id == model.id)
                                   .order_by(HistoryEvent.id))
            return [_history_record(r) for r in rows]

    # what serving replicas read -----------------------------------------------------------

    def live_states(self) -> dict[str, LiveState]:
        """Every model's runtime, generation, aliases, policies, releases and key pins, in one read."""
        with self._tx() as session:
            rows = session.scalars(select(Model).options(selectinload(Model.aliases), selectinload(Model.traffic),
                                                         selectinload(Model.shadow), selectinload(Model.guard)))
            pins: dict[int, dict[int, int]] = {}
            for model_id, number, generation in session.execute(
                    select(Version.model_id, Version.number, Version.key_generation)
                    .where(Version.key_generation.is_not(None))):
                if generation is not None:
                    pins.setdefault(model_id, {})[number] = generation
            now = self._now()
            states = {}
            for r in rows:
                split = traffic_of(r)
                states[r.name] = LiveState(
                    name=r.name, runtime=r.runtime, generation=r.generation,
                    aliases={a.name: a.version for a in r.aliases},
                    cache=CachePolicy(r.cache_enabled, r.cache_ttl_seconds, r.cache_max_value_bytes),
                    batching=BatchPolicy(r.max_batch_size, r.max_delay_ms), device=r.device,
                    traffic=split.weights if split else None, shadow=shadow_of(r), guard=guard_of(r, now),
                    key_generations=pins.get(r.id, {}))
            return states

    def live_generations(self) -> dict[str, int]:
        """Every model's name and cache generation, in one query (the reaper's view of what is dead)."""
        with self._tx() as session:
            return {name: generation for name, generation in session.execute(select(Model.name, Model.generation))}
