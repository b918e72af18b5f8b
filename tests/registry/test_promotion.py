"""Promotion and rollback: one transaction moves production, renews the generation, records it."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from modelreg.registry import Conflict, Invalid, NotFound, RegistryService, Validated
from tests.registry.conftest import Upload


@pytest.fixture
def three_versions(registry: RegistryService, upload: Upload) -> RegistryService:
    registry.create_model("m", "onnx", actor="alice")
    for _ in range(3):
        upload("m")
    return registry


def test_promote_moves_production_and_bumps_the_generation(three_versions: RegistryService) -> None:
    change = three_versions.promote("m", 1, actor="alice")
    assert (change.production, change.generation, change.previous) == (1, 2, None)
    change = three_versions.promote("m", 2, actor="bob")
    assert (change.production, change.generation, change.previous) == (2, 3, 1)
    assert three_versions.get_model("m").production == 2


def test_promoting_the_live_version_again_changes_nothing(three_versions: RegistryService) -> None:
    three_versions.promote("m", 1, actor="alice")
    again = three_versions.promote("m", 1, actor="alice")
    assert again.generation == 2
    assert [h.action for h in three_versions.history("m")] == ["create", "promote"]


def test_rollback_walks_back_through_earlier_production_versions(three_versions: RegistryService) -> None:
    for v in (1, 2, 3):
        three_versions.promote("m", v, actor="alice")
    assert three_versions.rollback("m", actor="alice").production == 2
    assert three_versions.rollback("m", actor="alice").production == 1
    with pytest.raises(Conflict, match="no earlier production version"):
        three_versions.rollback("m", actor="alice")
    assert three_versions.get_model("m").production == 1


def test_rollback_after_a_new_promotion_returns_to_the_version_it_replaced(three_versions: RegistryService) -> None:
    three_versions.promote("m", 1, actor="alice")
    three_versions.promote("m", 2, actor="alice")
    three_versions.rollback("m", actor="alice")          # back to 1
    three_versions.promote("m", 3, actor="alice")        # 1 -> 3
    assert three_versions.rollback("m", actor="alice").production == 1


def test_rollback_to_a_named_version(three_versions: RegistryService) -> None:
    three_versions.promote("m", 3, actor="alice")
    change = three_versions.rollback("m", 1, actor="alice")
    assert (change.production, change.previous) == (1, 3)
    with pytest.raises(Conflict, match="already in production"):
        three_versions.rollback("m", 1, actor="alice")


def test_rollback_with_nothing_before_is_a_conflict(three_versions: RegistryService) -> None:
    with pytest.raises(Conflict, match="no earlier production version"):
        three_versions.rollback("m", actor="alice")


def test_unknown_version_cannot_be_promoted(three_versions: RegistryService) -> None:
    with pytest.raises(NotFound, match="has no version 9"):
        three_versions.promote("m", 9, actor="alice")
    assert three_versions.get_model("m").generation == 1


def test_a_failed_version_is_never_promoted(database_url: str, tmp_path: Path) -> None:
    from modelreg.registry import LocalArtifactStore, schema
    from modelreg.registry.db import make_engine, make_sessions

    schema.upgrade(database_url)
    engine = make_engine(database_url)
    service = RegistryService(make_sessions(engine), LocalArtifactStore(tmp_path / "a"),
                              lambda *a: Validated(format="onnx", signature=None, error="truncated file"))
    service.create_model("m", "onnx", actor="alice")
    service.upload_version("m", io.BytesIO(b"x"), filename=None, metadata={}, actor="alice")
    with pytest.raises(Conflict, match="failed validation and cannot serve: truncated file"):
        service.promote("m", 1, actor="alice")
    assert service.get_model("m").production is None
    engine.dispose()


def test_aliases_point_at_ready_versions_but_production_moves_only_by_promotion(
        three_versions: RegistryService) -> None:
    assert three_versions.set_alias("m", "staging", 2, actor="alice").aliases == {"staging": 2}
    assert three_versions.resolve("m", alias="staging").version == 2
    with pytest.raises(Invalid, match="only through /promote"):
        three_versions.set_alias("m", "production", 1, actor="alice")
    three_versions.delete_alias("m", "staging", actor="alice")
    with pytest.raises(NotFound, match="no alias 'staging'"):
        three_versions.resolve("m", alias="staging")


def test_purge_renews_the_generation_without_moving_production(three_versions: RegistryService) -> None:
    three_versions.promote("m", 2, actor="alice")
    change = three_versions.purge_cache("m", actor="alice")
    assert (change.production, change.generation) == (2, 3)


def test_concurrent_promotions_serialize_and_both_land_in_history(three_versions: RegistryService) -> None:
    barrier = threading.Barrier(2)
    results = []

    def promote(version: int) -> None:
        barrier.wait()
        results.append(three_versions.promote("m", version, actor=f"user{version}"))

    threads = [threading.Thread(target=promote, args=(v,)) for v in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    promotions = [h for h in three_versions.history("m") if h.action == "promote"]
    assert len(promotions) == 2
    first, second = promotions
    # The second promotion saw the first one's result: no lost update.
    assert first.from_version is None and second.from_version == first.to_version
    assert (first.generation, second.generation) == (2, 3)
    assert three_versions.get_model("m").production == second.to_version
