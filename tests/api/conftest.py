"""The real app through HTTP: settings -> app -> client, with the lifespan running."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from modelreg.api.app import create_app
from modelreg.api.settings import Settings

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def echo_artifact(offset: float, **extra: Any) -> bytes:
    """An artifact of the test plugin ``echo``: it answers y = x + offset (so outputs name their version)."""
    return json.dumps({"offset": offset, **extra}).encode()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url, auto_migrate=True,
                    admin_token=TOKEN, max_artifact_bytes=64 * 1024, unload_grace_seconds=0)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


# The type of the ``make_model`` fixture: make_model(name, *offsets, **policy) -> version numbers.
MakeModel = Callable[..., list[int]]


@pytest.fixture
def make_model(client: TestClient) -> MakeModel:
    """Create an echo model with one version per offset; returns the version numbers."""

    def _make(name: str, *offsets: float, **policy: Any) -> list[int]:
        response = client.post("/admin/models", json={"name": name, "runtime": "echo", **policy}, headers=AUTH)
        assert response.status_code == 201, response.text
        return [upload(client, name, echo_artifact(o)).json()["version"] for o in offsets]

    return _make


def upload(client: TestClient | httpx.Client, name: str, data: bytes, metadata: dict[str, Any] | None = None,
           filename: str = "model.json") -> httpx.Response:
    files = {"artifact": (filename, data, "application/octet-stream")}
    form = {"metadata": json.dumps(metadata)} if metadata is not None else {}
    return client.post(f"/admin/models/{name}/versions", files=files, data=form, headers=AUTH)


def deployment_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """For a fixture with params ["embedded", "servers"]: the embedded default (SQLite, in-process
    cache), or the real PostgreSQL + Redis with a database and key prefix of the test's own."""
    if request.param == "embedded":
        return Settings(data_dir=tmp_path / "data", admin_token=TOKEN, unload_grace_seconds=0)
    return Settings(data_dir=tmp_path / "data", admin_token=TOKEN, unload_grace_seconds=0, auto_migrate=True,
                    database_url=request.getfixturevalue("postgres_url"),
                    redis_url=request.getfixturevalue("redis_url"),
                    cache_prefix=request.getfixturevalue("key_prefix"))
