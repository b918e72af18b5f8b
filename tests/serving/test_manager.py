"""The model manager, without HTTP: a new version is loaded before the switch, a failed load keeps
the old one serving, a replaced version is unloaded after the grace period, a rollback within it
is instant, and many requests for one version load it once.

The registry is real (SQLite) and the runtime is the installed echo plugin, wrapped so a test can
count its loads and hold one open; time is a fake clock the test moves.
"""

from __future__ import annotations

import io
import json
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
from modelreg.registry import NoProductionVersion, RegistryService
from modelreg.serving.manager import ModelManager, Servable

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

    def devices(self) -> list[str]:
        return self._echo.devices()

    def load(self, artifact: Path, device: str, options: LoadOptions) -> LoadedModel:
        with self._lock:
            self.loads += 1
        self.loading.set()
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


def test_a_request_for_the_replaced_version_keeps_it_loaded_for_another_grace_period(
        registry: RegistryService, manager: ModelManager, clock: FakeClock) -> None:
    v1, v2 = serving_v1(registry, manager)
    registry.promote("iris", v2, actor="alice")
    manager.refresh()
    clock.advance(GRACE - 1)
    assert manager.resolve("iris", version=v1).version == v1  # a client pinned to v1
    clock.advance(GRACE - 1)
    manager.sweep()
    assert ("iris", v1) in manager.loaded_versions()
    clock.advance(1)
    manager.sweep()
    assert manager.loaded_versions() == [("iris", v2)]


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
