"""The engine's tests run on a real registry (SQLite at the schema's head) with its own artifact folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelreg.registry import LocalArtifactStore, RegistryService
from modelreg.registry.opening import open_registry


@pytest.fixture
def empty_registry(sqlite_url: str, tmp_path: Path) -> Iterator[RegistryService]:
    """No validator: every upload is "ready", as if it had passed validation on another replica."""
    with open_registry(sqlite_url, artifacts=LocalArtifactStore(tmp_path / "artifacts"), migrate=True) as opened:
        assert opened.registry is not None
        yield opened.registry
