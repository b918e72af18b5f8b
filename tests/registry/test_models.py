"""A user registers models by name and finds them again; bad names and duplicates are refused."""

from __future__ import annotations

import pytest

from modelreg.registry import Conflict, Invalid, NotFound, RegistryService
from tests.registry.conftest import Upload


def test_create_then_get_returns_the_model_with_its_policy(registry: RegistryService) -> None:
    created = registry.create_model("fraud", "onnx", actor="alice", description="card fraud",
                                    tags={"team": "risk"}, cache_ttl_seconds=30)
    fetched = registry.get_model("fraud")
    assert fetched == created
    assert (fetched.runtime, fetched.description, fetched.tags) == ("onnx", "card fraud", {"team": "risk"})
    assert fetched.cache.ttl_seconds == 30 and fetched.generation == 1 and fetched.production is None


def test_duplicate_name_is_a_conflict_and_keeps_the_first(registry: RegistryService) -> None:
    registry.create_model("weather", "onnx", actor="alice", description="first")
    with pytest.raises(Conflict, match="already exists"):
        registry.create_model("weather", "pytorch", actor="bob")
    assert [m.description for m in registry.list_models()] == ["first"]


@pytest.mark.parametrize("bad", ["", "a/b", "../etc", "has space", "x" * 129, "naïve", "a:b"])
def test_bad_names_are_invalid_and_change_nothing(registry: RegistryService, bad: str) -> None:
    with pytest.raises(Invalid, match="invalid model name"):
        registry.create_model(bad, "onnx", actor="alice")
    assert registry.list_models() == []


def test_longest_allowed_name_is_accepted(registry: RegistryService) -> None:
    assert registry.create_model("m." + "x" * 126, "onnx", actor="alice").name == "m." + "x" * 126


def test_unknown_model_is_not_found_with_a_hint(registry: RegistryService) -> None:
    with pytest.raises(NotFound, match="model 'ghost' does not exist; create it"):
        registry.get_model("ghost")


def test_update_changes_only_the_fields_sent(registry: RegistryService) -> None:
    registry.create_model("m", "onnx", actor="alice", description="d", cache_ttl_seconds=10)
    updated = registry.update_model("m", {"max_batch_size": 32}, actor="bob")
    assert updated.batching.max_batch_size == 32
    assert (updated.description, updated.cache.ttl_seconds) == ("d", 10)
    assert registry.update_model("m", {"cache_ttl_seconds": None}, actor="bob").cache.ttl_seconds is None


def test_update_refuses_bad_policy(registry: RegistryService) -> None:
    registry.create_model("m", "onnx", actor="alice")
    with pytest.raises(Invalid, match="device 'tpu'"):
        registry.update_model("m", {"device": "tpu"}, actor="bob")
    with pytest.raises(Invalid, match="unknown field"):
        registry.update_model("m", {"generation": 99}, actor="bob")
    assert registry.get_model("m").device is None


def test_delete_removes_the_model_and_its_name_can_be_reused(registry: RegistryService, upload: Upload) -> None:
    registry.create_model("m", "onnx", actor="alice")
    upload("m")
    registry.delete_model("m", actor="alice")
    with pytest.raises(NotFound):
        registry.get_model("m")
    again = registry.create_model("m", "onnx", actor="alice")
    assert again.latest_version is None
    assert [h.action for h in registry.history("m")] == ["create"]
