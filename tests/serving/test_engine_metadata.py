"""What the engine says about a model without running it (the V2 metadata and readiness answers)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelreg.plugins.discovery import PluginSet
from modelreg.registry import Conflict, LocalArtifactStore, NoProductionVersion, NotFound, RegistryService, schema
from modelreg.registry.db import make_engine, make_sessions
from modelreg.serving import ModelMetadata, Readiness, Serving
from modelreg.serving.breaker import CircuitBreaker
from modelreg.serving.cache import PredictionCache, make_redis
from modelreg.serving.manager import ModelManager
from modelreg.serving.validation import PluginValidator

ECHO = PluginSet.discover({"echo"})


def upload(registry: RegistryService, name: str, artifact: dict[str, object]) -> int:
    version = registry.upload_version(name, io.BytesIO(json.dumps(artifact).encode()), filename="echo.json",
                                      metadata={"format": "json"}, actor="alice")
    return version.version


@pytest.fixture
def registry(sqlite_url: str, tmp_path: Path) -> Iterator[RegistryService]:
    """``iris``: v1 serves (production), v2 failed validation; ``draft``: uploaded, never promoted."""
    schema.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    registry = RegistryService(make_sessions(engine), LocalArtifactStore(tmp_path / "artifacts"),
                               PluginValidator(ECHO, "cpu"))
    registry.create_model("iris", "echo", actor="alice")
    registry.promote("iris", upload(registry, "iris", {"offset": 2.0}), actor="alice")
    assert upload(registry, "iris", {"no such key": 1}) == 2
    registry.create_model("draft", "echo", actor="alice")
    upload(registry, "draft", {"offset": 1.0})
    yield registry
    engine.dispose()


def engine(registry: RegistryService, plugins: PluginSet = ECHO) -> Serving:
    manager = ModelManager(registry, ECHO, default_device="cpu")
    cache = PredictionCache(make_redis(None), breaker=CircuitBreaker(), first_level=None)
    return Serving(manager, cache, prefix="t", default_ttl_seconds=60, registry=registry, plugins=plugins)


def test_metadata_names_the_runtime_the_versions_that_serve_and_the_recorded_signature(
        registry: RegistryService) -> None:
    serving = engine(registry)
    found = asyncio.run(serving.model_metadata("iris"))
    recorded = registry.get_version("iris", 1).signature
    assert isinstance(found, ModelMetadata) and recorded is not None
    assert (found.name, found.version, found.platform, found.ready_versions) == ("iris", 1, "echo", (1,))
    assert found.signature.to_dict() == recorded
    # A failed version recorded no signature, and loading it to ask is refused with the reason.
    with pytest.raises(Conflict, match="version 2 of 'iris' failed validation and cannot serve"):
        asyncio.run(serving.model_metadata("iris", 2))


def test_a_model_with_nothing_promoted_has_no_metadata_or_readiness_until_asked_by_number(
        registry: RegistryService) -> None:
    serving = engine(registry)
    with pytest.raises(NoProductionVersion):
        asyncio.run(serving.model_metadata("draft"))
    with pytest.raises(NoProductionVersion):
        asyncio.run(serving.ready("draft"))
    assert asyncio.run(serving.ready("draft", 1)) == Readiness("draft", True)
    with pytest.raises(NotFound):
        asyncio.run(serving.ready("draft", 7))


def test_readiness_says_why_a_version_cannot_serve(registry: RegistryService) -> None:
    assert asyncio.run(engine(registry).ready("iris")) == Readiness("iris", True)
    failed = asyncio.run(engine(registry).ready("iris", 2))
    assert not failed.ready and failed.reason is not None
    assert failed.reason.startswith("version 2 of 'iris' failed validation and cannot serve: ")
    elsewhere = asyncio.run(engine(registry, PluginSet.discover(set())).ready("iris"))
    assert elsewhere == Readiness("iris", False, "runtime 'echo' of 'iris' is not available on this server")


def test_a_loaded_version_is_ready_without_asking_the_registry(registry: RegistryService) -> None:
    serving = engine(registry, PluginSet.discover(set()))  # the registry's answer would be "not available"
    serving.manager.refresh()  # loads the production version here
    assert asyncio.run(serving.ready("iris")) == Readiness("iris", True)


def test_the_server_is_ready_until_it_shuts_down(registry: RegistryService) -> None:
    serving = engine(registry)
    serving.manager.refresh()  # the start's first load pass
    assert serving.server_ready()
    asyncio.run(serving.close())
    assert not serving.server_ready()
