from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelreg.registry import LocalArtifactStore, RegistryService, VersionRecord, schema
from modelreg.registry.db import make_engine, make_sessions


@pytest.fixture
def registry(database_url: str, tmp_path: Path) -> Iterator[RegistryService]:
    schema.upgrade(database_url)
    engine = make_engine(database_url)
    yield RegistryService(make_sessions(engine), LocalArtifactStore(tmp_path / "artifacts"), max_artifact_bytes=10_000)
    engine.dispose()


# The type of the ``upload`` fixture, for the tests that take it.
Upload = Callable[..., VersionRecord]


@pytest.fixture
def upload(registry: RegistryService) -> Upload:
    """Upload a small artifact (distinct bytes per call unless given) as ``alice``."""
    counter = iter(range(10**6))

    def _upload(name: str, data: bytes | None = None, **metadata: object) -> VersionRecord:
        payload = data if data is not None else f"artifact-{next(counter)}".encode()
        return registry.upload_version(name, io.BytesIO(payload), filename="model.bin",
                                       metadata={"format": "bin", **metadata}, actor="alice")

    return _upload
