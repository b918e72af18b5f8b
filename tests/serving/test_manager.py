"""The model manager, without HTTP: a new version is loaded before the switch, a failed load keeps
the old one serving, a replaced version is unloaded after the grace period, a rollback within it
is instant, and many requests for one version load it once.

The registry is real (SQLite) and the runtime is the installed echo plugin, wrapped so a test can
count its loads and hold one open; time is a fake clock the test moves.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import modelreg_echo
import numpy as np
import pytest

from modelreg.plugins.base import LoadedModel, LoadOptions, Runtime
from modelreg.plugins.discovery import AVAILABLE, PluginSet, PluginStatus
from modelreg.registry import LiveState, NoProductionVersion, NotFound, RegistryService, Unavailable
from modelreg.serving.manager import FAILED_RETRY_SECONDS, ModelManager, Servable, VersionUnavailable, public_reason
from modelreg.serving.misses import BURST, INTERVAL_SECONDS, TTL_SECONDS, UnknownNames

GRACE = 60.0
WAIT = 20.0  # the most any step may take on a loaded machine before the test calls it stuck


class FakeClock:
    """The manager's clock: it moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class WatchedRuntime:
    """The installed echo runtime, each load counted and, while ``hold`` is set, kept waiting."""

    name: ClassVar[str] = "echo"
    formats: ClassVar[frozenset[str]] = frozenset({"json"})

    def __init__(self, echo: Runtime) -> None:
        self._echo = echo
        self._lock = threading.Lock()
        self.loads = 0
        self.models: list[modelreg_echo.EchoModel] = []  # every model loaded, in order
        self.loading = threading.Event()  # set when a load has started
        self.hold: threading.Event | None = None  # when set to an event, loads wait for it
        self.offered: list[str] | None = None  # devices to claim instead of the echo runtime's
        self.fail: Exception | None = None  # when set, loads raise it (a plugin's own bug)
        self.devices_fail: Exception | None = None  # when set, listing devices raises it

    def devices(self) -> list[str]:
        if self.devices_fail is not None:
            raise self.devices_fail
        return self.offered if self.offered is not None else self._echo.devices()

    def load(self, artifact: Path, device: str, options: LoadOptions) -> LoadedModel:
        with self._lock:
            self.loads += 1
        self.loading.set()
        if self.fail is not None:
            raise self.fail
        if self.hold is not None and not self.hold.wait(WAIT):
            raise AssertionError("the test never released the held load")
        model = self._echo.load(artifact, device, options)
        self.models.append(model)
        return model


@pytest.fixture
def registry(empty_registry: RegistryService) -> RegistryService:
    return empty_registry


@pytest.fixture
def runtime() -> WatchedRuntime:
    return WatchedRuntime(PluginSet.discover({"echo"}).get("echo"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manager(registry: RegistryService, runtime: WatchedRuntime, clock: FakeClock) -> Iterator[ModelManager]:
    plugins = PluginSet([PluginStatus(name="echo", status=AVAILABLE, runtime=runtime)])
    manager = ModelManager(registry, plugins, default_device="cpu", grace_seconds=GRACE, clock=clock)
    yield manager
    manager.close()


def upload(registry: RegistryService, name: str, artifact: bytes) -> int:
    """Upload an echo artifact (``{"offset": 2}`` answers x + 2) and return its version number."""
    record = registry.upload_version(name, io.BytesIO(artifact), filename="echo.json",
                                     metadata={"format": "json"}, actor="alice")
    return record.version


def echo_version(registry: RegistryService, name: str, offset: float) -> int:
    return upload(registry, name, json.dumps({"offset": offset}).encode())


def answer(servable: Servable) -> float:
    """What the servable's model answers for x = 0 (its offset: which version computed it)."""
    return float(servable.model.predict({"x": np.zeros((1, 1), np.float32)})["y"][0, 0])


def serving_v1(registry: RegistryService, manager: ModelManager) -> tuple[int, int]:
    """A model "iris" with v1 (offset 1) in production and v2 (offset 2) uploaded; returns (v1, v2)."""
    registry.create_model("iris", "echo", actor="alice")
    v1, v2 = echo_version(registry, "iris", 1.0), echo_version(registry, "iris", 2.0)
    registry.promote("iris", v1, actor="alice")
    manager.refresh()
    assert manager.resolve("iris").version == v1
    return v1, v2


def wait_for(event: threading.Event, what: str) -> None:
    assert event.wait(WAIT), f"{what} did not happen within {WAIT}s"


def test_the_new_version_is_loaded_before_requests_switch_to_it(
        registry: RegistryService, manager: ModelManager, runtime: WatchedRuntime) -> None:
    v1, v2 = serving_v1(registry, manager)
    old_generation = manager.resolve("iris").state.generation
    runtime.hold = threading.Event()
    runtime.loading.clear()
    promoted = registry.promote("iris", v2, actor="alice")
    switching = threading.Thread(target=manager.refresh, args=("iris",))
    switching.start()
    try:
        wait_for(runtime.loading, "the load of v2")
        # While v2 loads, a request still finds v1 loaded, in v1's cache namespace, computing with v1.
        during = manager.resolve_loaded("iris")
        assert during is not None
        assert (during.version, during.state.generation, answer(during)) == (v1, old_generation, 1.0)
    finally:
        runtime.hold.set()
        switching.join(WAIT)
    after = manager.resolve("iris")
    assert (after.version, after.state.generation, answer(after)) == (v2, promoted.generation, 2.0)
    assert runtime.loads == 2


def test_a_version_that_fails_to_load_leaves_the_old_one_and_its_generation_serving(
        registry: RegistryService, manager: ModelManager) -> None:
    v1, _ = serving_v1(registry, manager)
    old_generation = manager.resolve("iris").state.generation
    broken = upload(registry, "iris", b'{"offset": "two"}')  # the echo plugin refuses this artifact
    registry.promote("iris", broken, actor="alice")
    manager.refresh()
    still = manager.resolve("iris")
    assert (still.version, still.state.generation, answer(still)) == (v1, old_generation, 1.0)
    assert list(manager.failures()) == [("iris", broken)]
    assert manager.failures()[("iris", broken)].startswith("an echo artifact is a JSON object like")


def test_a_failed_version_is_forgotten_once_production_moves_past_it(
        registry: RegistryService, manager: ModelManager) -> None:
    serving_v1(registry, manager)
    broken = upload(registry, "iris", b'{"offset": "two"}')
    registry.promote("iris", broken, actor="alice")
    manager.refresh()
    assert ("iris", broken) in manager.failures()
    fixed = echo_version(registry, "iris", 3.0)
    registry.promote("iris", fixed, actor="alice")
    manager.refresh()
    assert manager.resolve("iris").version == fixed and manager.failures() == {}


def test_the_replaced_version_is_unloaded_only_after_the_grace_period(
        registry: RegistryService, manager: ModelManager, runtime: WatchedRuntime, clock: FakeClock) -> None:
    v1, v2 = serving_v1(registry, manager)
    registry.promote("iris", v2, actor="alice")
    manager.refresh()
    old, new = runtime.models
    assert manager.loaded_versions() == [("iris", v1), ("iris", v2)]

    clock.advance(GRACE - 1)
    manager.sweep()
    assert manager.loaded_versions() == [("iris", v1), ("iris", v2)] and not old.unloaded

    clock.advance(1)
    manager.sweep()
    assert manager.loaded_versions() == [("iris", v2)]
    assert old.unloaded and not new.unloaded
    assert manager.resolve("iris").model is new


def test_requests_for_the_replaced_version_do_not_extend_its_grace_period_which_counts_from_the_replacement(
        registry: RegistryService, manager: ModelManager, clock: FakeClock) -> None:
    v1, v2 = serving_v1(registry, manager)
    registry.promote("iris", v2, actor="alice")
    manager.refresh()
    clock.advance(GRACE - 1)
    assert manager.resolve("iris", version=v1).version == v1  # a client pinned to v1, a second before the end
    manager.sweep()
    assert ("iris", v1) in manager.loaded_versions()
    clock.advance(1)
    manager.sweep()
    # GPU memory comes back on a known schedule, whoever still asks for the old version.
    assert manager.loaded_versions() == [("iris", v2)]


def test_a_version_loaded_on_demand_and_never_live_is_unloaded_a_grace_period_after_its_last_use(
        registry: RegistryService, manager: ModelManager, clock: FakeClock) -> None:
    _, v2 = serving_v1(registry, manager)
    manager.resolve("iris", version=v2)  # the versioned route; production stays v1
    clock.advance(GRACE - 1)
    manager.resolve("iris", version=v2)
    clock.advance(GRACE - 1)
    manager.sweep()
    assert ("iris", v2) in manager.loaded_versions()
    clock.advance(1)
    manager.sweep()
    assert ("iris", v2) not in manager.loaded_versions()


def test_a_rollback_within_the_grace_period_loads_nothing(
        registry: RegistryService, manager: ModelManager, runtime: WatchedRuntime, clock: FakeClock) -> None:
    v1, v2 = serving_v1(registry, manager)
    first = manager.resolve("iris").model
    registry.promote("iris", v2, actor="alice")
    manager.refresh()
    assert runtime.loads == 2

    clock.advance(GRACE / 2)
    rolled = registry.rollback("iris", actor="alice")
    manager.refresh()
    back = manager.resolve("iris")
    assert (back.version, back.state.generation) == (v1, rolled.generation)
    assert back.model is first and runtime.loads == 2


def test_a_rollback_after_the_grace_period_loads_the_old_version_again(
        registry: RegistryService, manager: ModelManager, runtime: WatchedRuntime, clock: FakeClock) -> None:
    v1, v2 = serving_v1(registry, manager)
    registry.promote("iris", v2, actor="alice")
    manager.refresh()
    clock.advance(GRACE)
    manager.sweep()
    registry.rollback("iris", actor="alice")
    manager.refresh()
    assert manager.resolve("iris").version == v1 and runtime.loads == 3


def test_concurrent_requests_for_a_version_not_yet_loaded_load_it_once(
        registry: RegistryService, manager: ModelManager, runtime: WatchedRuntime) -> None:
    _, v2 = serving_v1(registry, manager)
    requests = 8
    arrived = threading.Semaphore(0)
    runtime.hold = threading.Event()
    results: list[Servable] = []
    errors: list[BaseException] = []

    def ask() -> None:
        arrived.release()
        try:
            results.append(manager.resolve("iris", version=v2))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(requests)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(requests):
            assert arrived.acquire(timeout=WAIT), "not every request started"
        wait_for(runtime.loading, "the load of v2")
        # Every request has started; give the last ones a moment to reach the load before it ends.
        time.sleep(0.2)
    finally:
        runtime.hold.set()
        for thread in threads:
            thread.join(WAIT)
    assert errors == []
    assert len(results) == requests and {r.version for r in results} == {v2}
    assert len({id(r.model) for r in results}) == 1
    assert runtime.loads == 2  # v1 at the start, v2 once


def test_a_model_without_a_production_version_says_how_to_promote_one(
        registry: RegistryService, manager: ModelManager) -> None:
    registry.create_model("fresh", "echo", actor="alice")
    manager.refresh()
    with pytest.raises(NoProductionVersion) as refused:
        manager.resolve("fresh")
    assert str(refused.value) == str(NoProductionVersion("fresh"))
    assert "promote one with POST /admin/models/fresh/promote" in str(refused.value)


def lose_artifact(registry: RegistryService, name: str, version: int) -> Path:
    """Delete a version's artifact file, as on a replica whose artifact folder lacks it; returns its path."""
    path = registry.artifacts.path(registry.get_version(name, version).sha256)
    path.unlink()
    return path


def test_a_device_change_reloads_the_live_version_on_the_new_device_and_retires_the_old_copy_after_the_grace(
        registry: RegistryService, manager: ModelManager, runtime: WatchedRuntime, clock: FakeClock) -> None:
    runtime.offered = ["cpu", "cuda:0"]  # the echo model runs anywhere; the manager only needs two names
    v1, _ = serving_v1(registry, manager)
    on_cpu = manager.resolve("iris").model
    registry.update_model("iris", {"device": "cuda:0"}, actor="alice")
    manager.refresh()
    moved = manager.resolve("iris")
    assert (moved.version, moved.model.device) == (v1, "cuda:0") and moved.model is not on_cpu
    assert runtime.loads == 2
    clock.advance(GRACE - 1)
    manager.sweep()
    assert not on_cpu.unloaded  # a request that resolved the CPU copy a moment ago may still run on it
    clock.advance(1)
    manager.sweep()
    assert on_cpu.unloaded and not moved.model.unloaded
    assert manager.report()["iris"]["loaded"] == [{"version": v1, "device": "cuda:0", "memory_bytes": None}]


def test_a_device_this_replica_lacks_keeps_the_old_device_serving_and_says_why(
        registry: RegistryService, manager: ModelManager) -> None:
    v1, _ = serving_v1(registry, manager)
    registry.update_model("iris", {"device": "cuda:3"}, actor="alice")
    manager.refresh()
    assert manager.resolve("iris").model.device == "cpu"
    assert "device 'cuda:3' is not available here" in manager.failures()[("iris", v1)]


def test_a_version_whose_artifact_is_missing_here_is_unavailable_with_the_reason_and_no_server_path(
        registry: RegistryService, manager: ModelManager) -> None:
    _, v2 = serving_v1(registry, manager)
    path = lose_artifact(registry, "iris", v2)
    with pytest.raises(VersionUnavailable) as refused:
        manager.resolve("iris", version=v2)
    message = str(refused.value)
    assert message.startswith(f"iris v{v2} cannot be loaded on this replica: ")
    assert "is not in this replica's artifact store" in message and str(path.parent) not in message
    assert refused.value.headers == {"Retry-After": "5"}
    assert manager.failures()[("iris", v2)] == refused.value.reason


def test_a_runtime_bug_while_loading_is_contained_to_that_version_and_its_server_path_is_not_shown(
        registry: RegistryService, manager: ModelManager, runtime: WatchedRuntime) -> None:
    v1, v2 = serving_v1(registry, manager)
    runtime.fail = OSError("[Errno 5] Input/output error: '/srv/modelreg/artifacts/sha256/ab/abcdef'")
    registry.promote("iris", v2, actor="alice")
    manager.refresh()  # no exception escapes: the poll goes on and v1 keeps serving
    assert manager.resolve("iris").version == v1
    with pytest.raises(VersionUnavailable) as refused:
        manager.resolve("iris", version=v2)
    assert refused.value.reason == "runtime 'echo' raised OSError: [Errno 5] Input/output error: '<path>'"


def test_a_model_whose_production_cannot_load_here_is_unavailable_never_missing(
        registry: RegistryService, manager: ModelManager) -> None:
    registry.create_model("art", "echo", actor="alice")
    version = echo_version(registry, "art", 1.0)
    registry.promote("art", version, actor="alice")
    lose_artifact(registry, "art", version)
    manager.refresh()  # the replica starts without the artifact
    with pytest.raises(VersionUnavailable, match=f"^art v{version} cannot be loaded on this replica"):
        manager.resolve("art")
    with pytest.raises(NotFound):
        manager.resolve("never-created")


def test_requests_after_a_failed_load_answer_from_the_record_until_the_retry_delay_passes(
        registry: RegistryService, manager: ModelManager, runtime: WatchedRuntime, clock: FakeClock) -> None:
    _, v2 = serving_v1(registry, manager)
    runtime.fail = RuntimeError("CUDA out of memory")
    for _ in range(5):
        with pytest.raises(VersionUnavailable):
            manager.resolve("iris", version=v2)
    assert runtime.loads == 2  # v1, then one try of v2: a broken artifact costs one load, not one per request
    clock.advance(FAILED_RETRY_SECONDS)
    with pytest.raises(VersionUnavailable):
        manager.resolve("iris", version=v2)
    assert runtime.loads == 3


def test_a_version_that_loads_again_is_no_longer_reported_failed(
        registry: RegistryService, manager: ModelManager, clock: FakeClock) -> None:
    _, v2 = serving_v1(registry, manager)
    path = lose_artifact(registry, "iris", v2)
    with pytest.raises(VersionUnavailable):
        manager.preload("iris", v2)
    path.write_text(json.dumps({"offset": 2.0}))  # the shared folder catches up
    manager.preload("iris", v2)
    assert manager.failures() == {} and ("iris", v2) in manager.loaded_versions()


def test_preload_loads_a_version_before_it_is_promoted_so_the_switch_loads_nothing(
        registry: RegistryService, manager: ModelManager, runtime: WatchedRuntime) -> None:
    _, v2 = serving_v1(registry, manager)
    manager.preload("iris", v2)
    assert runtime.loads == 2 and manager.resolve("iris").version != v2
    registry.promote("iris", v2, actor="alice")
    manager.refresh()
    assert manager.resolve("iris").version == v2 and runtime.loads == 2


def test_the_report_says_what_is_served_on_each_alias_what_is_loaded_and_what_failed(
        registry: RegistryService, manager: ModelManager) -> None:
    v1, v2 = serving_v1(registry, manager)
    registry.set_alias("iris", "canary", v2, actor="alice")
    lose_artifact(registry, "iris", v2)
    manager.refresh()
    report = manager.report()["iris"]
    assert report["serving"] == {"production": v1, "canary": v2}
    assert report["loaded"] == [{"version": v1, "device": "cpu", "memory_bytes": None}]
    with pytest.raises(VersionUnavailable):
        manager.resolve("iris", alias="canary")
    assert [f["version"] for f in manager.report()["iris"]["failed"]] == [v2]


@pytest.mark.parametrize(("text", "shown"), [
    ("[Errno 2] No such file or directory: '/srv/data/artifacts/sha256/ab/abcdef'",
     "[Errno 2] No such file or directory: '<path>'"),
    ("cannot open /var/lib/models/x.onnx (corrupt)", "cannot open <path> (corrupt)"),
    ("device 'cuda:3' is not available here; available: cpu", "device 'cuda:3' is not available here; available: cpu"),
    ("ratio 1/2 of inputs", "ratio 1/2 of inputs"),
])
def test_a_failure_reason_shown_to_clients_has_no_server_path(text: str, shown: str) -> None:
    assert public_reason(text) == shown


# hostile traffic: unknown names and old versions -------------------------------------------

class CountedReads:
    """``registry.live_states`` counted: how many times the manager read every model's live state."""

    def __init__(self, registry: RegistryService, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = 0
        self._read = registry.live_states
        monkeypatch.setattr(registry, "live_states", self)

    def __call__(self) -> dict[str, LiveState]:
        self.reads += 1
        return self._read()


def test_a_flood_of_unknown_names_reads_the_registry_once_per_interval_for_all_of_them(
        registry: RegistryService, manager: ModelManager, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    serving_v1(registry, manager)
    counted = CountedReads(registry, monkeypatch)
    for i in range(5000):
        with pytest.raises(NotFound):
            manager.resolve(f"random-{i}")
    assert counted.reads == BURST  # the first few names read the registry; the rest asked nothing
    clock.advance(INTERVAL_SECONDS)
    with pytest.raises(NotFound):
        manager.resolve("random-0")  # seen missing a moment ago: answered from the negative cache
    for i in range(5000, 5100):
        with pytest.raises(NotFound):
            manager.resolve(f"random-{i}")
    assert counted.reads == BURST + 1  # one read a second for every unknown name together
    assert manager.resolve("iris").version == 1  # the real model serves throughout


def test_a_model_created_on_another_replica_is_found_by_its_first_request(
        registry: RegistryService, manager: ModelManager) -> None:
    serving_v1(registry, manager)
    registry.create_model("fresh", "echo", actor="alice")
    registry.promote("fresh", echo_version(registry, "fresh", 5.0), actor="alice")
    # No event or poll has told this replica yet: the miss reads the registry and switches to it.
    assert answer(manager.resolve("fresh")) == 5.0


def test_a_model_created_after_its_name_was_seen_missing_serves_from_the_next_poll(
        registry: RegistryService, manager: ModelManager) -> None:
    serving_v1(registry, manager)
    with pytest.raises(NotFound):
        manager.resolve("late")
    registry.create_model("late", "echo", actor="alice")
    registry.promote("late", echo_version(registry, "late", 7.0), actor="alice")
    with pytest.raises(NotFound):
        manager.resolve("late")  # within the interval: the negative cache answers, no SQL
    manager.refresh()  # the poll (or the event of the promotion) brings it in, whatever the cache says
    assert answer(manager.resolve("late")) == 7.0


def test_the_negative_cache_keeps_at_most_its_size_and_forgets_names_after_its_ttl() -> None:
    clock = FakeClock()
    unknown = UnknownNames(max_names=100, clock=clock)
    for i in range(10_000):
        unknown.missing(f"name-{i}")
    assert len(unknown) == 100
    assert unknown.recently_missing("name-9999") and not unknown.recently_missing("name-0")
    clock.advance(TTL_SECONDS)
    assert not unknown.recently_missing("name-9999")


def test_an_unknown_name_while_the_registry_is_down_is_unavailable_not_missing(
        registry: RegistryService, manager: ModelManager, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    serving_v1(registry, manager)

    def down() -> dict[str, LiveState]:
        raise Unavailable("OperationalError: connection refused")

    monkeypatch.setattr(registry, "live_states", down)
    with pytest.raises(Unavailable):
        manager.refresh()  # a poll tick
    for name in ("created-elsewhere-maybe", "another"):
        with pytest.raises(Unavailable):  # "does not exist" would be a guess
            manager.resolve(name)
    assert manager.registry_error == "OperationalError: connection refused"
    assert manager.resolve("iris").version == 1  # loaded models keep serving


def test_versions_loaded_on_demand_past_the_cap_unload_the_least_recently_used_never_an_aliased_one(
        registry: RegistryService, runtime: WatchedRuntime, clock: FakeClock) -> None:
    plugins = PluginSet([PluginStatus(name="echo", status=AVAILABLE, runtime=runtime)])
    manager = ModelManager(registry, plugins, default_device="cpu", grace_seconds=GRACE, max_on_demand=2,
                           clock=clock)
    try:
        v1, v2 = serving_v1(registry, manager)
        v3, v4, v5, canary = (echo_version(registry, "iris", float(o)) for o in (3, 4, 5, 6))
        registry.set_alias("iris", "canary", canary, actor="alice")
        manager.refresh()
        assert answer(manager.resolve("iris", alias="canary")) == 6.0
        for number in (v2, v3, v2, v4):  # v2 is used again before v4 comes: v3 is the least recently used
            clock.advance(1)
            manager.resolve("iris", version=number)
        assert manager.loaded_versions() == [("iris", v) for v in (v1, v2, v4, canary)]
        clock.advance(1)
        manager.resolve("iris", version=v5)
        # Production and the canary alias stay whatever the flood: only versions loaded on demand go.
        assert manager.loaded_versions() == [("iris", v) for v in (v1, v4, v5, canary)]
        assert [m.unloaded for m in runtime.models] == [False, False, True, True, False, False]
        assert runtime.loads == 6  # each once: the survivors were not reloaded
    finally:
        manager.close()


def test_the_cap_on_demand_leaves_the_replaced_version_its_grace_so_a_rollback_stays_instant(
        registry: RegistryService, runtime: WatchedRuntime, clock: FakeClock) -> None:
    plugins = PluginSet([PluginStatus(name="echo", status=AVAILABLE, runtime=runtime)])
    manager = ModelManager(registry, plugins, default_device="cpu", grace_seconds=GRACE, max_on_demand=1,
                           clock=clock)
    try:
        v1, v2 = serving_v1(registry, manager)
        registry.promote("iris", v2, actor="alice")
        manager.refresh()
        for offset in (3.0, 4.0, 5.0):
            clock.advance(1)
            manager.resolve("iris", version=echo_version(registry, "iris", offset))
        assert ("iris", v1) in manager.loaded_versions() and len(manager.loaded_versions()) == 3
        registry.rollback("iris", actor="alice")
        loads = runtime.loads
        manager.refresh()
        assert manager.resolve("iris").version == v1 and runtime.loads == loads
    finally:
        manager.close()


# containment: whatever a plugin raises stays with its model ----------------------------------

def test_a_runtime_raising_while_listing_its_devices_is_a_failed_version_and_the_refresh_goes_on(
        registry: RegistryService, manager: ModelManager, runtime: WatchedRuntime) -> None:
    runtime.devices_fail = RuntimeError("driver not initialised")
    registry.create_model("iris", "echo", actor="alice")
    registry.promote("iris", echo_version(registry, "iris", 1.0), actor="alice")
    manager.refresh()  # the start: no exception escapes, the server starts
    assert manager.started
    assert manager.failures()[("iris", 1)] == ("runtime 'echo' raised RuntimeError listing its devices: "
                                               "driver not initialised")
    assert manager.unserved() == {"iris": "v1 cannot be loaded here (serving nothing): runtime 'echo' raised "
                                          "RuntimeError listing its devices: driver not initialised"}
    with pytest.raises(VersionUnavailable):
        manager.resolve("iris")


def test_an_unexpected_error_with_one_model_leaves_the_other_models_refreshed(
        registry: RegistryService, manager: ModelManager, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="modelreg.manager")
    for name in ("a", "b"):
        registry.create_model(name, "echo", actor="alice")
        registry.promote(name, echo_version(registry, name, 1.0), actor="alice")
    real_get_version = registry.get_version

    def get_version(name: str, number: int) -> object:
        if name == "a":
            raise RuntimeError("a bug reading a")
        return real_get_version(name, number)

    monkeypatch.setattr(registry, "get_version", get_version)
    manager.refresh()
    assert manager.started and list(manager.states()) == ["b"]
    assert answer(manager.resolve("b")) == 1.0
    for _ in range(3):  # the polls that follow retry it, without a traceback each time
        manager.refresh()
    failed = [r for r in caplog.records if r.getMessage().startswith("refreshing a failed")]
    assert [r.levelname for r in failed] == ["ERROR", "DEBUG", "DEBUG", "DEBUG"] and failed[0].exc_info


def test_a_plugin_failing_to_unload_or_to_say_its_memory_stops_neither_the_sweep_nor_the_report(
        registry: RegistryService, manager: ModelManager, runtime: WatchedRuntime, clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    v1, v2 = serving_v1(registry, manager)
    registry.promote("iris", v2, actor="alice")
    manager.refresh()
    old = runtime.models[0]

    def unload() -> None:
        raise RuntimeError("cannot free")

    monkeypatch.setattr(old, "unload", unload)
    monkeypatch.setattr(type(old), "memory_bytes", property(lambda self: 1 // 0), raising=False)
    assert [e["memory_bytes"] for e in manager.report()["iris"]["loaded"]] == [None, None]
    clock.advance(GRACE)
    manager.sweep()
    assert manager.loaded_versions() == [("iris", v2)]
