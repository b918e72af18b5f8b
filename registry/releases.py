"""Releasing safely: traffic splits, shadows, guarded promotions, and the warm-key pins they keep.

The rules live here; ``ReleaseMethods`` gives ``RegistryService`` its public release methods, each one
SQL transaction that writes a history row when it changes something.

Warm keys: a version's cache keys carry its pinned generation (``versions.key_generation``) while it
holds a role (production, the version of an alias in the traffic split, the shadow), else the model's
generation. A version gets its pin (the model's generation at that moment) when it takes its first
role, keeps it through a promotion (so what it computed as shadow or canary is served at once), and
loses it with its last role; a purge moves every pin to the new generation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from modelreg.names import is_alias
from modelreg.registry.entities import (
    PRODUCTION,
    Guard,
    GuardSpec,
    ProductionChange,
    ReleaseState,
    ShadowSetting,
    TrafficSplit,
    aware,
)
from modelreg.registry.errors import Conflict, Invalid, NoProductionVersion, NotFound
from modelreg.registry.history import record
from modelreg.registry.tables import SQL_INT_MAX, GuardRow, Model, Shadow, TrafficArm, Version

MAX_ARMS = 8
MAX_WINDOW_SECONDS = 86_400
MAX_P99_MS = 3_600_000.0  # an hour: anything slower is a timeout, not a latency limit


# validation -----------------------------------------------------------------------------------

def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def check_weights(model: Model, weights: Mapping[str, Any]) -> dict[str, int]:
    """The split as stored (heaviest arm first), or Invalid saying what to fix."""
    example = '{"weights": {"production": 90, "canary": 10}}'
    if not isinstance(weights, Mapping) or not weights:
        raise Invalid(f"give the split as alias -> weight, e.g. {example}")
    if len(weights) > MAX_ARMS:
        raise Invalid(f"a traffic split has at most {MAX_ARMS} arms; this one has {len(weights)}")
    aliases = {a.name for a in model.aliases}
    for alias, weight in weights.items():
        if not isinstance(alias, str) or not is_alias(alias):
            raise Invalid(f"invalid alias {alias!r} in the split: use 1-64 letters, digits, '-', '_' or '.'")
        if not _is_int(weight) or not 0 <= weight <= 100:
            raise Invalid(f"the weight of {alias!r} must be a whole number from 0 to 100, not {weight!r}")
        if alias not in aliases:
            if alias == PRODUCTION:
                raise NoProductionVersion(model.name)
            known = ", ".join(sorted(aliases)) or "none"
            raise Invalid(f"model {model.name!r} has no alias {alias!r} (it has: {known}); point one at a version "
                          f"with PUT /admin/models/{model.name}/aliases/{alias} first")
    total = sum(weights.values())
    if total != 100:
        raise Invalid(f"the weights must add up to 100; these add up to {total}")
    return _ordered({alias: int(weight) for alias, weight in weights.items()})


def _ordered(weights: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(weights.items(), key=lambda item: (-item[1], item[0])))


def check_percent(percent: object) -> float:
    if not _is_number(percent) or not 0 < percent <= 100:  # type: ignore[operator]
        raise Invalid(f"percent must be a number above 0 and at most 100, not {percent!r}")
    return float(percent)  # type: ignore[arg-type]


def check_guard(spec: GuardSpec) -> GuardSpec:
    """The spec as given, or Invalid naming the limit to fix."""
    if not _is_int(spec.window_seconds) or not 1 <= spec.window_seconds <= MAX_WINDOW_SECONDS:
        raise Invalid(f"guard window_seconds must be a whole number from 1 to {MAX_WINDOW_SECONDS}, "
                      f"not {spec.window_seconds!r}")
    if spec.min_requests is not None and (not _is_int(spec.min_requests) or not 1 <= spec.min_requests <= SQL_INT_MAX):
        raise Invalid(f"guard min_requests must be a whole number of at least 1, not {spec.min_requests!r}")
    if spec.max_error_rate is not None and (not _is_number(spec.max_error_rate) or not 0 <= spec.max_error_rate <= 1):
        raise Invalid(f"guard max_error_rate is a fraction from 0 to 1 (0.01 = 1 %), not {spec.max_error_rate!r}")
    if spec.max_p99_ms is not None and (not _is_number(spec.max_p99_ms) or not 0 < spec.max_p99_ms <= MAX_P99_MS):
        raise Invalid(f"guard max_p99_ms must be above 0 and at most {MAX_P99_MS:g}, not {spec.max_p99_ms!r}")
    if spec.max_error_rate is None and spec.max_p99_ms is None:
        raise Invalid("a guard needs a limit to watch: give max_error_rate, max_p99_ms or both")
    return spec


def weights_text(weights: Mapping[str, int]) -> str:
    return " ".join(f"{alias}={weight}" for alias, weight in weights.items())


# reading rows into entities -------------------------------------------------------------------

def traffic_of(model: Model) -> TrafficSplit | None:
    if not model.traffic:
        return None
    return TrafficSplit(model.name, _ordered({arm.alias: arm.weight for arm in model.traffic}))


def shadow_of(model: Model) -> ShadowSetting | None:
    row = model.shadow
    return ShadowSetting(model.name, row.version, row.percent) if row is not None else None


def guard_of(model: Model, now: datetime) -> Guard | None:
    """The model's guard while its window lasts (None once it is over)."""
    row = model.guard
    if row is None:
        return None
    guard = Guard(model=model.name, version=row.version, replaced=row.replaced,
                  spec=GuardSpec(row.window_seconds, row.min_requests, row.max_error_rate, row.max_p99_ms),
                  started_at=aware(row.started_at), ends_at=aware(row.ends_at))
    return guard if guard.active(now) else None


def production_of(model: Model) -> int | None:
    return next((a.version for a in model.aliases if a.name == PRODUCTION), None)


# keeping the rules inside a transaction ------------------------------------------------------

def role_versions(model: Model) -> set[int]:
    """Versions that serve in some role: production, an alias of the split, the shadow."""
    aliases = {a.name: a.version for a in model.aliases}
    roles = {aliases[arm.alias] for arm in model.traffic if arm.alias in aliases}
    if PRODUCTION in aliases:
        roles.add(aliases[PRODUCTION])
    if model.shadow is not None:
        roles.add(model.shadow.version)
    return roles


def sync_pins(session: Session, model: Model, *, repin: bool = False) -> None:
    """Pin versions that took a role (at the model's generation now), unpin those that hold none;
    ``repin`` (a purge) moves every pin to the current generation."""
    roles = role_versions(model)
    rows = session.scalars(select(Version).where(
        Version.model_id == model.id, or_(Version.number.in_(roles), Version.key_generation.is_not(None))))
    for row in rows:
        if row.number not in roles:
            row.key_generation = None
        elif row.key_generation is None or repin:
            row.key_generation = model.generation


def after_production_move(session: Session, model: Model, target: int, actor: str, *,
                          guard: GuardSpec | None, replaced: int | None, now: datetime) -> None:
    """What a new production version means for the releases: the old guard ends (a new one starts
    with ``guard``), a shadow of ``target`` ends (recorded), and pins follow the roles."""
    if guard is None:
        model.guard = None
    else:
        _place_guard(model, target, replaced, guard, now)
    if model.shadow is not None and model.shadow.version == target:
        record(session, model, "shadow", actor, from_version=target, reason=f"ended: v{target} is now production")
        model.shadow = None
    sync_pins(session, model)


def _place_guard(model: Model, version: int, replaced: int | None, spec: GuardSpec, now: datetime) -> None:
    # Updated in place: a delete and an insert of the same key in one flush may run in the wrong order.
    row = model.guard or GuardRow(model_id=model.id)
    row.version, row.replaced = version, replaced
    row.window_seconds, row.min_requests = spec.window_seconds, spec.min_requests
    row.max_error_rate, row.max_p99_ms = spec.max_error_rate, spec.max_p99_ms
    row.started_at, row.ends_at = now, now + timedelta(seconds=spec.window_seconds)
    model.guard = row


# the service's public release methods ---------------------------------------------------------

class ReleaseMethods:
    """Traffic, shadow and guard methods of ``RegistryService`` (which provides the primitives below)."""

    if TYPE_CHECKING:
        def _tx(self) -> AbstractContextManager[Session]: ...
        def _model(self, session: Session, name: str, *, lock: bool = False) -> Model: ...
        def _ready_version(self, session: Session, model: Model, number: int) -> Version: ...
        def _now(self) -> datetime: ...
        def _move_production(self, session: Session, model: Model, target: int, action: str, actor: str, *,
                             reason: str | None = None, guard: GuardSpec | None = None) -> ProductionChange: ...

    # traffic --------------------------------------------------------------------------------

    def set_traffic(self, name: str, weights: Mapping[str, int], *, actor: str) -> TrafficSplit:
        """Share the production route among aliases by integer weights summing to 100."""
        with self._tx() as session:
            model = self._model(session, name, lock=True)
            clean = check_weights(model, weights)
            current = {arm.alias: arm.weight for arm in model.traffic}
            if current == clean:
                return TrafficSplit(name, clean)
            for arm in list(model.traffic):
                if arm.alias in clean:
                    arm.weight = clean[arm.alias]
                else:
                    model.traffic.remove(arm)
            model.traffic.extend(TrafficArm(model_id=model.id, alias=alias, weight=weight)
                                 for alias, weight in clean.items() if alias not in current)
            record(session, model, "traffic", actor, reason=weights_text(clean))
            sync_pins(session, model)
            return TrafficSplit(name, clean)

    def get_traffic(self, name: str) -> TrafficSplit | None:
        with self._tx() as session:
            return traffic_of(self._model(session, name))

    def clear_traffic(self, name: str, *, actor: str) -> None:
        """Send every request of the production route to production again."""
        with self._tx() as session:
            model = self._model(session, name, lock=True)
            if not model.traffic:
                return
            model.traffic.clear()
            record(session, model, "traffic", actor, reason="cleared: every request goes to production")
            sync_pins(session, model)

    # shadow ---------------------------------------------------------------------------------

    def set_shadow(self, name: str, version: int, percent: float, *, actor: str) -> ShadowSetting:
        """Also run ``percent`` % of production requests on ``version``, in the background."""
        percent = check_percent(percent)
        with self._tx() as session:
            model = self._model(session, name, lock=True)
            self._ready_version(session, model, version)
            live = production_of(model)
            if live is None:
                raise NoProductionVersion(name)
            if live == version:
                raise Invalid(f"v{version} is the production version of {name!r}: shadow a candidate version, "
                              "not the one that already answers")
            row = model.shadow
            if row is not None and (row.version, row.percent) == (version, percent):
                return ShadowSetting(name, version, percent)
            previous = row.version if row is not None else None
            if row is None:
                model.shadow = Shadow(model_id=model.id, version=version, percent=percent, started_at=self._now())
            else:
                if row.version != version:
                    row.started_at = self._now()
                row.version, row.percent = version, percent
            record(session, model, "shadow", actor, from_version=previous, to_version=version,
                   reason=f"{percent:g}% of production requests")
            sync_pins(session, model)
            return ShadowSetting(name, version, percent)

    def get_shadow(self, name: str) -> ShadowSetting | None:
        with self._tx() as session:
            return shadow_of(self._model(session, name))

    def clear_shadow(self, name: str, *, actor: str) -> None:
        """Stop shadowing (nothing to do when no shadow runs)."""
        with self._tx() as session:
            model = self._model(session, name, lock=True)
            if model.shadow is None:
                return
            record(session, model, "shadow", actor, from_version=model.shadow.version, reason="stopped")
            model.shadow = None
            sync_pins(session, model)

    # guard ----------------------------------------------------------------------------------

    def active_guard(self, name: str) -> Guard | None:
        """The guard watching the production version; None once its window is over or it fired."""
        with self._tx() as session:
            return guard_of(self._model(session, name), self._now())

    def guard_rollback(self, name: str, version: int, reason: str) -> ProductionChange | None:
        """Roll back a guarded promotion that broke a limit; None (nothing done) unless a guard on
        ``version`` is active and ``version`` is still production, so every replica may call it."""
        with self._tx() as session:
            try:
                model = self._model(session, name, lock=True)
            except NotFound:
                return None
            guard = guard_of(model, self._now())
            if guard is None or guard.version != version or guard.replaced is None or production_of(model) != version:
                return None
            self._ready_version(session, model, guard.replaced)
            return self._move_production(session, model, guard.replaced, "rollback", "guard", reason=reason)

    def end_guard(self, name: str, version: int) -> None:
        """The window is over without a breach: the guard goes, and nothing more is recorded."""
        with self._tx() as session:
            try:
                model = self._model(session, name, lock=True)
            except NotFound:
                return
            if model.guard is not None and model.guard.version == version:
                model.guard = None

    # reads ----------------------------------------------------------------------------------

    def release_state(self, name: str) -> ReleaseState:
        """The model's traffic split, shadow and active guard, in one read."""
        with self._tx() as session:
            model = self._model(session, name)
            return ReleaseState(traffic_of(model), shadow_of(model), guard_of(model, self._now()))

    def pinned_generations(self) -> dict[str, dict[int, int]]:
        """Per model, the versions whose cache keys carry a pinned generation, in one query (the reaper's
        view: a pinned version's keys at that generation are live even behind the model's generation)."""
        with self._tx() as session:
            rows = session.execute(select(Model.name, Version.number, Version.key_generation)
                                   .join(Version, Version.model_id == Model.id)
                                   .where(Version.key_generation.is_not(None)))
            pins: dict[str, dict[int, int]] = {}
            for model, number, generation in rows:
                if generation is not None:
                    pins.setdefault(model, {})[number] = generation
            return pins


def refuse_alias_in_split(model: Model, alias: str) -> None:
    """An alias the split sends requests to cannot be deleted from under it."""
    split = traffic_of(model)
    if split is not None and alias in split.weights:
        raise Conflict(f"alias {alias!r} is an arm of {model.name}'s traffic split ({weights_text(split.weights)}): "
                       f"change the split first (PUT or DELETE /admin/models/{model.name}/traffic)")
