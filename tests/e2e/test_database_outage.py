"""PostgreSQL unreachable: loaded models keep answering, admin says 503, and both recover by themselves."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.api.conftest import AUTH
from tests.e2e.conftest import StartReplicas, create_echo_model
from tests.e2e.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow
OFFSETS = [1000.0, 2000.0]  # version v answers x + 1000 * v


@pytest.fixture
def proxied_postgres(postgres_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """The test's database through a proxy the test can cut: (proxy, URL through it)."""
    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.start()
    try:
        yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    finally:
        proxy.stop()


def _predict(client: httpx.Client, x: float) -> tuple[int, int, object]:
    response = client.post("/models/m/predict", json={"inputs": [[x]]})
    version = int(response.headers.get("x-model-version", "0"))
    return response.status_code, version, response.json()


def test_with_the_database_cut_predict_serves_admin_says_503_and_both_recover_without_a_restart(
        proxied_postgres: tuple[TcpProxy, str], start_replicas: StartReplicas, redis_url: str) -> None:
    proxy, database_url = proxied_postgres  # set up first, so the replica stops before the proxy does
    (replica,) = start_replicas(1, database_url=database_url, redis_url=redis_url)
    create_echo_model(replica.url, "m", OFFSETS)
    with httpx.Client(base_url=replica.url, timeout=10) as client:
        assert client.post("/admin/models/m/promote", json={"version": 1}, headers=AUTH).status_code == 200
        for x in range(5):  # some answers cached before the outage, others computed during it
            assert _predict(client, float(x))[:2] == (200, 1)

        proxy.cut()
        for x in range(10):
            assert _predict(client, float(x)) == (200, 1, {"model": "m", "version": 1, "outputs": [[x + 1000.0]]})
        v2 = client.post("/v2/models/m/infer", json={"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [3.0]}]})
        assert v2.status_code == 200 and v2.json()["outputs"][0]["data"] == [1003.0]

        for method, path, body in [("GET", "/admin/models", None), ("GET", "/admin/models/m/history", None),
                                   ("POST", "/admin/models/m/promote", {"version": 2})]:
            started = time.monotonic()
            response = client.request(method, path, json=body, headers=AUTH)
            assert response.status_code == 503, (path, response.text)
            assert "registry database is unavailable" in response.json()["detail"]
            assert response.headers["retry-after"] == "5"
            assert time.monotonic() - started < 3.0, f"{path} took {time.monotonic() - started:.1f}s to say 503"
        # Degraded, not unready: Kubernetes must not drain replicas whose loaded models still serve.
        deadline = time.monotonic() + 10
        while (ready := client.get("/readyz")).json()["status"] != "degraded":  # once a poll tick has failed
            assert ready.status_code == 200, ready.text
            assert time.monotonic() < deadline, f"readiness never reported the outage: {ready.text}"
            time.sleep(0.1)
        assert ready.status_code == 200 and ready.json()["checks"]["database"].startswith("unavailable: ")
        assert client.get("/healthz").status_code == 200
        time.sleep(1.5)  # a few poll ticks fail meanwhile (every 0.5 s)
        assert _predict(client, 1.0)[:2] == (200, 1)

        proxy.resume()
        deadline = time.monotonic() + 10
        while client.get("/readyz").json()["status"] != "ready":
            assert time.monotonic() < deadline, "still degraded 10 s after the database came back"
            time.sleep(0.1)
        assert client.get("/admin/models", headers=AUTH).status_code == 200
        promoted = client.post("/admin/models/m/promote", json={"version": 2}, headers=AUTH)
        assert promoted.status_code == 200, promoted.text
        assert _predict(client, 1.0) == (200, 2, {"model": "m", "version": 2, "outputs": [[2001.0]]})

        deadline = time.monotonic() + 5
        while "registry reachable again" not in replica.log.read_text():  # the next poll tick says so
            assert time.monotonic() < deadline, "the poll did not report the database back"
            time.sleep(0.1)
    assert replica.log.read_text().count("registry unreachable") == 1, "an outage is reported once, not every tick"
