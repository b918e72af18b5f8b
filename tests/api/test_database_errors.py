"""The error map for database failures: an outage is a 503 that says so, a bug is a 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from modelreg.registry import RegistryService
from tests.api.conftest import AUTH


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url"))  # the mapping does not depend on the database


@pytest.mark.parametrize("error", [
    OperationalError("SELECT 1", {}, Exception("connection refused")),
    PoolTimeout("QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 5.00"),
])
def test_an_unreachable_database_is_a_503_with_retry_after(client: TestClient, monkeypatch: pytest.MonkeyPatch,
                                                           error: Exception) -> None:
    def unreachable(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(RegistryService, "list_models", unreachable)
    response = client.get("/admin/models", headers=AUTH)
    assert response.status_code == 503
    assert response.json()["detail"].startswith("the registry database is unavailable")
    assert response.headers["retry-after"] == "5"


def test_an_integrity_error_that_escapes_the_service_is_a_500_not_an_outage(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    monkeypatch.setattr(RegistryService, "list_models", broken)
    response = client.get("/admin/models", headers=AUTH)
    assert response.status_code == 500
    assert response.json()["detail"] == "internal error (IntegrityError); see the server log"
