"""Releasing safely in the registry: traffic splits, shadows, guarded promotions and warm-key pins."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelreg.registry import (
    Conflict,
    GuardSpec,
    Invalid,
    NoProductionVersion,
    NotFound,
    RegistryService,
    ShadowSetting,
    TrafficSplit,
)
from tests.registry.conftest import Upload


class Clock:
    """The registry's clock, moved by the test instead of waiting."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(registry: RegistryService) -> Clock:
    clock = Clock()
    registry._clock = clock
    return clock


@pytest.fixture
def m(registry: RegistryService, upload: Upload) -> RegistryService:
    """Model ``m`` with versions 1-3, v1 in production (generation 2) and ``canary`` -> v2."""
    registry.create_model("m", "onnx", actor="alice")
    for _ in range(3):
        upload("m")
    registry.promote("m", 1, actor="alice")
    registry.set_alias("m", "canary", 2, actor="alice")
    return registry


def last(registry: RegistryService) -> dict[str, object]:
    return registry.history("m")[-1].to_dict()


# traffic ------------------------------------------------------------------------------------

def test_a_split_is_stored_read_back_and_recorded(m: RegistryService) -> None:
    split = m.set_traffic("m", {"canary": 10, "production": 90}, actor="bob")
    assert split == TrafficSplit("m", {"production": 90, "canary": 10})
    assert m.get_traffic("m") == split
    assert last(m) | {"at": None} == {"action": "traffic", "alias": None, "from_version": None, "to_version": None,
                                      "generation": 2, "actor": "bob", "at": None,
                                      "reason": "production=90 canary=10"}
    m.set_traffic("m", {"production": 90, "canary": 10}, actor="bob")  # the same split: nothing to record
    assert [h.action for h in m.history("m")].count("traffic") == 1
    assert m.get_model("m").generation == 2  # a split moves no namespace


def test_clearing_a_split_sends_everything_to_production_and_says_so(m: RegistryService) -> None:
    m.set_traffic("m", {"production": 50, "canary": 50}, actor="bob")
    m.clear_traffic("m", actor="bob")
    assert m.get_traffic("m") is None
    assert last(m)["reason"] == "cleared: every request goes to production"
    m.clear_traffic("m", actor="bob")  # nothing to clear: no row
    assert [h.action for h in m.history("m")].count("traffic") == 2


BAD_SPLITS: list[tuple[dict[str, Any], str]] = [
    ({"production": 90, "canary": 20}, "must add up to 100; these add up to 110"),
    ({"production": 90.0, "canary": 10}, "whole number from 0 to 100, not 90.0"),
    ({"production": True, "canary": 99}, "whole number from 0 to 100, not True"),
    ({"production": 110, "canary": -10}, "whole number from 0 to 100, not 110"),
    ({"production": 90, "staging": 10}, "has no alias 'staging' (it has: canary, production)"),
    ({"production": 90, "bad alias": 10}, "invalid alias 'bad alias'"),
    ({}, "give the split as alias -> weight"),
    ({f"a{i}": 10 for i in range(10)}, "at most 8 arms; this one has 10"),
]


def test_a_bad_split_is_refused_with_what_to_fix(m: RegistryService) -> None:
    for weights, message in BAD_SPLITS:
        with pytest.raises(Invalid) as refused:
            m.set_traffic("m", weights, actor="bob")
        assert message in str(refused.value)
    assert m.get_traffic("m") is None
    assert last(m)["action"] == "alias"


def test_production_is_an_arm_only_once_there_is_one(registry: RegistryService, upload: Upload) -> None:
    registry.create_model("m", "onnx", actor="alice")
    upload("m")
    registry.set_alias("m", "canary", 1, actor="alice")
    with pytest.raises(NoProductionVersion, match="no production version yet"):
        registry.set_traffic("m", {"production": 90, "canary": 10}, actor="bob")
    with pytest.raises(NotFound, match="model 'nope' does not exist"):
        registry.set_traffic("nope", {"production": 100}, actor="bob")


def test_an_alias_the_split_uses_cannot_be_deleted_until_the_split_changes(m: RegistryService) -> None:
    m.set_traffic("m", {"production": 90, "canary": 10}, actor="bob")
    with pytest.raises(Conflict, match=r"alias 'canary' is an arm of m's traffic split \(production=90 canary=10\): "
                                       r"change the split first"):
        m.delete_alias("m", "canary", actor="bob")
    m.set_traffic("m", {"production": 100}, actor="bob")
    m.delete_alias("m", "canary", actor="bob")
    assert "canary" not in m.get_model("m").aliases


def test_promoting_the_canary_leaves_the_split_pointing_at_production_twice(m: RegistryService) -> None:
    m.set_traffic("m", {"production": 90, "canary": 10}, actor="bob")
    m.promote("m", 2, actor="bob")
    assert m.get_traffic("m") == TrafficSplit("m", {"production": 90, "canary": 10})
    state = m.live_states()["m"]
    assert (state.aliases["production"], state.aliases["canary"]) == (2, 2)


# shadow -------------------------------------------------------------------------------------

def test_a_shadow_is_stored_replaced_and_stopped_with_history(m: RegistryService) -> None:
    assert m.set_shadow("m", 2, 20, actor="bob") == ShadowSetting("m", 2, 20.0)
    assert m.get_shadow("m") == ShadowSetting("m", 2, 20.0)
    assert (last(m)["action"], last(m)["to_version"], last(m)["reason"]) == ("shadow", 2, "20% of production requests")
    m.set_shadow("m", 2, 20, actor="bob")  # unchanged: no row
    m.set_shadow("m", 3, 5.5, actor="bob")
    assert (last(m)["from_version"], last(m)["to_version"], last(m)["reason"]) == (2, 3, "5.5% of production requests")
    m.clear_shadow("m", actor="bob")
    assert m.get_shadow("m") is None
    assert (last(m)["action"], last(m)["from_version"], last(m)["reason"]) == ("shadow", 3, "stopped")
    m.clear_shadow("m", actor="bob")
    assert [h.action for h in m.history("m")].count("shadow") == 3


def test_a_shadow_percent_outside_0_to_100_is_refused(m: RegistryService) -> None:
    for percent in (0, -1, 100.5, float("nan"), float("inf"), True, "20"):
        with pytest.raises(Invalid, match="percent must be a number above 0 and at most 100"):
            m.set_shadow("m", 2, percent, actor="bob")  # type: ignore[arg-type]
    assert m.get_shadow("m") is None


def test_a_shadow_must_be_a_ready_version_other_than_production(m: RegistryService, upload: Upload) -> None:
    with pytest.raises(Invalid, match="v1 is the production version of 'm': shadow a candidate"):
        m.set_shadow("m", 1, 20, actor="bob")
    with pytest.raises(NotFound, match="has no version 9"):
        m.set_shadow("m", 9, 20, actor="bob")
    m.create_model("fresh", "onnx", actor="alice")
    upload("fresh")
    with pytest.raises(NoProductionVersion):
        m.set_shadow("fresh", 1, 20, actor="bob")
    assert m.get_shadow("m") is None


def test_promoting_the_shadow_version_ends_the_shadow_on_record(m: RegistryService) -> None:
    m.set_shadow("m", 2, 20, actor="bob")
    m.promote("m", 2, actor="carol")
    assert m.get_shadow("m") is None
    promote, ended = m.history("m")[-2:]
    assert (promote.action, promote.to_version) == ("promote", 2)
    assert (ended.action, ended.from_version, ended.actor, ended.reason) == ("shadow", 2, "carol",
                                                                             "ended: v2 is now production")


def test_promoting_another_version_keeps_the_shadow(m: RegistryService) -> None:
    m.set_shadow("m", 2, 20, actor="bob")
    m.promote("m", 3, actor="carol")
    assert m.get_shadow("m") == ShadowSetting("m", 2, 20.0)


# warm keys ------------------------------------------------------------------------------------

def test_warm_keys_follow_the_roles_a_version_holds(m: RegistryService) -> None:
    g = m.get_model("m").generation

    def pins() -> dict[int, int]:
        return m.live_states()["m"].key_generations

    assert pins() == {1: g}  # production holds its key
    m.set_shadow("m", 2, 20, actor="bob")
    assert pins() == {1: g, 2: g}  # shadowing pins v2 at G: its answers go where they will be read
    change = m.promote("m", 2, actor="bob")
    assert change.generation == g + 1  # promotion still moves the namespace (invariant 2) ...
    assert pins() == {2: g}  # ... but v2 keeps its warm keys, and v1, with no role left, loses its pin
    state = m.live_states()["m"]
    assert (state.key_generation(2), state.key_generation(1)) == (g, g + 1)
    purged = m.purge_cache("m", actor="bob")
    assert pins() == {2: purged.generation}  # a purge invalidates the warm keys too
    back = m.rollback("m", 1, actor="bob")
    assert pins() == {1: back.generation}  # an unpinned version pins at the new generation


def test_a_canary_arm_pins_its_version_and_moving_the_alias_moves_the_pin(m: RegistryService) -> None:
    g = m.get_model("m").generation
    m.set_alias("m", "staging", 3, actor="bob")  # an alias outside the split holds no role
    assert m.live_states()["m"].key_generations == {1: g}
    m.set_traffic("m", {"production": 90, "canary": 10}, actor="bob")
    assert m.live_states()["m"].key_generations == {1: g, 2: g}
    m.set_alias("m", "canary", 3, actor="bob")
    assert m.live_states()["m"].key_generations == {1: g, 3: g}
    m.promote("m", 3, actor="bob")
    assert m.live_states()["m"].key_generations == {3: g}  # canary and production are both v3 now
    m.clear_traffic("m", actor="bob")
    assert m.pinned_generations() == {"m": {3: g}}


def test_live_states_carry_the_split_the_shadow_the_guard_and_the_pins(m: RegistryService, clock: Clock) -> None:
    state = m.live_states()["m"]
    assert (state.traffic, state.shadow, state.guard) == (None, None, None)
    m.set_traffic("m", {"production": 80, "canary": 20}, actor="bob")
    m.set_shadow("m", 3, 10, actor="bob")
    m.promote("m", 2, actor="bob", guard=GuardSpec(window_seconds=60, max_error_rate=0.01))
    state = m.live_states()["m"]
    assert state.traffic == {"production": 80, "canary": 20}
    assert state.shadow == ShadowSetting("m", 3, 10.0)
    assert state.guard is not None and (state.guard.version, state.guard.replaced) == (2, 1)
    assert state.key_generations == {2: 2, 3: 2}


# guard --------------------------------------------------------------------------------------

def test_a_guarded_promotion_records_what_it_replaced_and_for_how_long(m: RegistryService, clock: Clock) -> None:
    spec = GuardSpec(window_seconds=120, min_requests=100, max_error_rate=0.01, max_p99_ms=250)
    m.promote("m", 2, actor="bob", guard=spec)
    guard = m.active_guard("m")
    assert guard is not None
    assert (guard.model, guard.version, guard.replaced, guard.spec) == ("m", 2, 1, spec)
    assert (guard.started_at, guard.ends_at) == (clock.now, clock.now + timedelta(seconds=120))
    assert guard.to_dict()["spec"] == {"window_seconds": 120, "min_requests": 100, "max_error_rate": 0.01,
                                       "max_p99_ms": 250}
    assert m.release_state("m").to_dict()["guard"] == guard.to_dict()
    clock.advance(120)
    assert m.active_guard("m") is None  # the window is over
    assert m.release_state("m").guard is None


def test_a_breach_rolls_back_once_with_the_guard_as_actor(m: RegistryService, clock: Clock) -> None:
    m.promote("m", 2, actor="bob", guard=GuardSpec(window_seconds=300, max_error_rate=0.01))
    reason = "error rate 0.50 > 0.01 over 120 requests"
    change = m.guard_rollback("m", 2, reason)
    assert change is not None and (change.production, change.previous) == (1, 2)
    row = m.history("m")[-1]
    assert (row.action, row.from_version, row.to_version, row.actor, row.reason) == ("rollback", 2, 1, "guard", reason)
    assert row.to_dict()["reason"] == reason
    assert m.active_guard("m") is None
    assert m.guard_rollback("m", 2, reason) is None  # every replica may report it: one rollback
    assert [h.actor for h in m.history("m")].count("guard") == 1
    assert m.rollback_target("m") is None  # the guarded promotion is popped off the rollback stack


def test_replicas_reporting_the_same_breach_at_once_roll_back_once(m: RegistryService, clock: Clock) -> None:
    m.promote("m", 2, actor="bob", guard=GuardSpec(window_seconds=300, max_error_rate=0.01))
    start = threading.Barrier(4)
    changes: list[object] = []

    def report() -> None:
        start.wait()
        changes.append(m.guard_rollback("m", 2, "error rate 0.50 > 0.01 over 120 requests"))

    threads = [threading.Thread(target=report) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(change is not None for change in changes) == 1
    assert [h.actor for h in m.history("m")].count("guard") == 1
    assert m.get_model("m").production == 1


def test_a_guard_rolls_back_nothing_it_does_not_watch(m: RegistryService, clock: Clock) -> None:
    m.promote("m", 2, actor="bob", guard=GuardSpec(window_seconds=300, max_p99_ms=100))
    assert m.guard_rollback("m", 3, "p99 900 ms > 100 ms") is None  # not the guarded version
    assert m.guard_rollback("nope", 2, "p99") is None  # no such model
    clock.advance(300)
    assert m.guard_rollback("m", 2, "p99 900 ms > 100 ms") is None  # window over
    assert m.get_model("m").production == 2


def test_a_manual_change_of_production_ends_the_guard(m: RegistryService, clock: Clock) -> None:
    m.promote("m", 2, actor="bob", guard=GuardSpec(window_seconds=300, max_error_rate=0.1))
    m.rollback("m", actor="bob")
    assert m.active_guard("m") is None
    assert m.guard_rollback("m", 2, "late report") is None
    assert m.get_model("m").production == 1


def test_a_second_promotion_replaces_the_guard(m: RegistryService, clock: Clock) -> None:
    m.promote("m", 2, actor="bob", guard=GuardSpec(window_seconds=300, max_error_rate=0.1))
    m.promote("m", 2, actor="bob", guard=GuardSpec(window_seconds=10, max_error_rate=0.5))  # no-op: guard kept
    guard = m.active_guard("m")
    assert guard is not None and guard.spec.window_seconds == 300
    clock.advance(5)
    m.promote("m", 3, actor="bob", guard=GuardSpec(window_seconds=60, max_error_rate=0.2))
    guard = m.active_guard("m")
    assert guard is not None and (guard.version, guard.replaced, guard.started_at) == (3, 2, clock.now)
    m.promote("m", 1, actor="bob")
    assert m.active_guard("m") is None


def test_ending_a_guard_without_breach_records_nothing(m: RegistryService, clock: Clock) -> None:
    m.promote("m", 2, actor="bob", guard=GuardSpec(window_seconds=60, max_error_rate=0.1))
    rows = len(m.history("m"))
    m.end_guard("m", 3)  # not this guard's version: it stays
    assert m.active_guard("m") is not None
    m.end_guard("m", 2)
    m.end_guard("m", 2)
    m.end_guard("nope", 2)
    assert m.active_guard("m") is None
    assert len(m.history("m")) == rows


BAD_GUARDS = [
    (GuardSpec(window_seconds=0, max_error_rate=0.1), "window_seconds must be a whole number from 1 to 86400"),
    (GuardSpec(window_seconds=86_401, max_error_rate=0.1), "from 1 to 86400, not 86401"),
    (GuardSpec(min_requests=0, max_error_rate=0.1), "min_requests must be a whole number of at least 1"),
    (GuardSpec(max_error_rate=1.5), "max_error_rate is a fraction from 0 to 1"),
    (GuardSpec(max_error_rate=float("nan")), "max_error_rate is a fraction from 0 to 1"),
    (GuardSpec(max_p99_ms=0), "max_p99_ms must be above 0"),
    (GuardSpec(window_seconds=60), "a guard needs a limit to watch"),
]


def test_a_bad_guard_is_refused_and_nothing_is_promoted(m: RegistryService) -> None:
    for spec, message in BAD_GUARDS:
        with pytest.raises(Invalid, match=message):
            m.promote("m", 2, actor="bob", guard=spec)
    assert m.get_model("m").production == 1


def test_a_first_promotion_cannot_be_guarded(registry: RegistryService, upload: Upload) -> None:
    registry.create_model("m", "onnx", actor="alice")
    upload("m")
    with pytest.raises(Invalid, match="no production version yet: promote this first one without a guard"):
        registry.promote("m", 1, actor="bob", guard=GuardSpec(max_error_rate=0.1))
    assert registry.get_model("m").production is None


def test_deleting_a_model_takes_its_releases_with_it(m: RegistryService, upload: Upload) -> None:
    m.set_traffic("m", {"production": 90, "canary": 10}, actor="bob")
    m.set_shadow("m", 3, 10, actor="bob")
    m.promote("m", 2, actor="bob", guard=GuardSpec(max_error_rate=0.1))
    m.delete_model("m", actor="bob")
    m.create_model("m", "onnx", actor="alice")
    upload("m")
    m.promote("m", 1, actor="alice")
    state = m.live_states()["m"]
    assert (state.traffic, state.shadow, state.guard, state.key_generations) == (None, None, None, {1: 2})
