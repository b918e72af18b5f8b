"""Versions: numbered per model, safe under concurrent uploads, artifacts stored by sha256."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from modelreg.registry import NotFound, RegistryService, StoredArtifact, TooLarge, Validated
from tests.registry.conftest import Upload


def test_versions_are_numbered_from_one_per_model(registry: RegistryService, upload: Upload) -> None:
    registry.create_model("a", "onnx", actor="alice")
    registry.create_model("b", "onnx", actor="alice")
    assert [upload("a").version, upload("a").version, upload("b").version] == [1, 2, 1]


def test_artifact_is_stored_by_its_sha256_and_deduplicated(registry: RegistryService, upload: Upload) -> None:
    registry.create_model("m", "onnx", actor="alice")
    first, second = upload("m", b"same bytes"), upload("m", b"same bytes")
    assert first.sha256 == second.sha256 == hashlib.sha256(b"same bytes").hexdigest()
    path = registry.artifacts.path(first.sha256)
    assert path.read_bytes() == b"same bytes"
    assert sorted(p.name for p in path.parent.iterdir()) == [first.sha256]
    assert (first.size_bytes, first.created_by, first.status) == (10, "alice", "ready")


def test_twenty_concurrent_uploads_get_twenty_distinct_numbers(registry: RegistryService) -> None:
    registry.create_model("m", "onnx", actor="alice")

    def one(i: int) -> int:
        return registry.upload_version("m", io.BytesIO(f"a{i}".encode()), filename=None,
                                       metadata={}, actor="alice").version

    with ThreadPoolExecutor(max_workers=20) as pool:
        numbers = list(pool.map(one, range(20)))
    assert sorted(numbers) == list(range(1, 21))


def test_oversized_upload_is_refused_and_leaves_nothing(registry: RegistryService, tmp_path: Path) -> None:
    registry.create_model("m", "onnx", actor="alice")
    with pytest.raises(TooLarge, match="limit of 10000 bytes"):
        registry.upload_version("m", io.BytesIO(b"x" * 10_001), filename=None, metadata={}, actor="alice")
    assert registry.list_versions("m") == []
    leftovers = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    assert leftovers == []


def test_upload_to_unknown_model_stores_nothing(registry: RegistryService, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        registry.upload_version("ghost", io.BytesIO(b"x"), filename=None, metadata={}, actor="alice")
    assert [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()] == []


def test_interrupted_upload_leaves_no_version_and_no_partial_file(registry: RegistryService, tmp_path: Path) -> None:
    registry.create_model("m", "onnx", actor="alice")

    class Broken(io.RawIOBase):
        sent = 0

        def read(self, size: int = -1) -> bytes:
            self.sent += 1
            if self.sent > 2:
                raise ConnectionResetError("client went away")
            return b"x" * 1000

    with pytest.raises(ConnectionResetError):
        registry.upload_version("m", Broken(), filename=None, metadata={}, actor="alice")  # type: ignore[arg-type]
    assert registry.list_versions("m") == []
    assert [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()] == []


def test_a_failed_validation_is_kept_as_a_failed_version_with_its_reason(database_url: str, tmp_path: Path) -> None:
    from modelreg.registry import LocalArtifactStore, schema
    from modelreg.registry.db import make_engine, make_sessions

    def refuse(runtime: str, artifact: StoredArtifact, filename: str | None, metadata: Mapping[str, Any],
               device: str | None) -> Validated:
        return Validated(format="onnx", signature=None, error="not an ONNX model: protobuf parsing failed")

    schema.upgrade(database_url)
    engine = make_engine(database_url)
    service = RegistryService(make_sessions(engine), LocalArtifactStore(tmp_path / "a"), refuse)
    service.create_model("m", "onnx", actor="alice")
    record = service.upload_version("m", io.BytesIO(b"junk"), filename="m.onnx", metadata={}, actor="alice")
    assert (record.status, record.error) == ("failed", "not an ONNX model: protobuf parsing failed")
    engine.dispose()


def test_metadata_is_kept_apart_from_signature_and_format(registry: RegistryService, upload: Upload) -> None:
    registry.create_model("m", "onnx", actor="alice")
    record = upload("m", signature={"inputs": [], "outputs": []}, accuracy=0.93)
    got = registry.get_version("m", record.version)
    assert got.metadata == {"accuracy": 0.93}
    assert got.signature == {"inputs": [], "outputs": []} and got.format == "bin"
