"""Database failures: the registry turns an outage into a 503 that says so; a bug stays a 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from modelreg.registry import RegistryService, Unavailable
from tests.api.conftest import AUTH


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url"))  # the mapping does not depend on the database


def fail_every_query(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """The database misbehaves under the registry: every query the service sends raises ``error``."""
    def failing(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(Session, "scalars", failing)
    monkeypatch.setattr(Session, "execute", failing)


@pytest.mark.parametrize("error", [
    OperationalError("SELECT 1", {}, Exception("connection refused")),
    InterfaceError("SELECT 1", {}, Exception("connection already closed")),
    DBAPIError("SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True),
    PoolTimeout("QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 5.00"),
], ids=["refused", "interface", "invalidated", "pool-timeout"])
def test_an_unreachable_database_is_a_503_with_retry_after(client: TestClient, monkeypatch: pytest.MonkeyPatch,
                                                           error: Exception) -> None:
    fail_every_query(monkeypatch, error)
    response = client.get("/admin/models", headers=AUTH)
    assert response.status_code == 503
    assert response.json()["detail"].startswith("the registry database is unavailable")
    assert response.headers["retry-after"] == "5"


def test_readiness_reports_the_outage_as_degraded_not_unready(client: TestClient,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    fail_every_query(monkeypatch, OperationalError("SELECT 1", {}, Exception("connection refused")))
    with pytest.raises(Unavailable):  # the next poll tick finds the database gone
        client.app.state.services.manager.refresh()
    response = client.get("/readyz")
    # Loaded models keep serving, so the replica stays in the load balancer and says what is wrong.
    assert response.status_code == 200
    assert response.json() == {"status": "degraded",
                               "checks": {"database": "unavailable: OperationalError", "models": "ok"}}


def test_a_statement_error_under_the_registry_is_a_500_not_an_outage(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_every_query(monkeypatch, ProgrammingError("SELECT nope", {}, Exception("no such column")))
    response = client.get("/admin/models", headers=AUTH)
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    assert response.json()["detail"] == (
        f"internal error (ProgrammingError); see the server log for request id {request_id}")
    assert "retry-after" not in response.headers


def test_an_integrity_error_that_escapes_the_service_is_a_500_not_an_outage(
        client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    monkeypatch.setattr(RegistryService, "list_models", broken)
    response = client.get("/admin/models", headers=AUTH)
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    assert response.json()["detail"] == (
        f"internal error (IntegrityError); see the server log for request id {request_id}")
    # The id in the answer finds the traceback in the log; the message itself (a query) stays there.
    assert any(request_id in r.getMessage() and r.exc_info for r in caplog.records)
    assert "duplicate key" not in response.text
