"""The fast path answers the three predict routes byte for byte as the framework routes do.

Two apps over one registry: one with the fast path in front (as deployed), one without it, so its
predicts reach the FastAPI routes. While the fast app answers, the framework's predict route and
its token guard are made to blow up, so an answer that fell through to them cannot pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.types import Message

from modelreg.api import deps
from modelreg.api.app import create_app
from modelreg.api.routes import predict as predict_routes
from modelreg.api.settings import Settings
from tests.api.conftest import AUTH, TOKEN, echo_artifact, upload

LIMIT = 2048  # MODELREG_MAX_REQUEST_BYTES of both apps
ROUTES = {
    "production": "/models/{model}/predict",
    "version": "/models/{model}/versions/1/predict",
    "alias": "/models/{model}/aliases/staging/predict",
}

TEMPLATES = ["/models/{name}/predict", "/models/{name}/versions/{version}/predict",
             "/models/{name}/aliases/{alias}/predict"]  # the routes' own paths, as the metrics label them


@dataclass(frozen=True)
class Pair:
    fast: TestClient
    framework: TestClient


def _open_pair(tmp: Path, *, predict_auth: bool) -> Iterator[Pair]:
    settings = Settings(data_dir=tmp / "data", database_url=f"sqlite:///{tmp / 'registry.db'}", auto_migrate=True,
                        admin_token=TOKEN, unload_grace_seconds=0, max_request_bytes=LIMIT,
                        predict_auth=predict_auth)
    with TestClient(create_app(settings)) as fast:
        assert fast.post("/admin/models", json={"name": "m", "runtime": "echo"}, headers=AUTH).status_code == 201
        assert upload(fast, "m", echo_artifact(1.0)).json()["version"] == 1
        assert fast.post("/admin/models/m/promote", json={"version": 1}, headers=AUTH).status_code == 200
        assert fast.put("/admin/models/m/aliases/staging", json={"version": 1}, headers=AUTH).status_code == 200
        # Started after the model exists, so it loads it at start-up like any replica.
        with TestClient(create_app(settings, fast_path=False)) as framework:
            yield Pair(fast, framework)


@pytest.fixture(scope="module")
def open_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    yield from _open_pair(tmp_path_factory.mktemp("open"), predict_auth=False)


@pytest.fixture(scope="module")
def token_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    yield from _open_pair(tmp_path_factory.mktemp("token"), predict_auth=True)


@dataclass(frozen=True)
class Case:
    """One request, sent ``times`` times to each app; the last answers are compared."""

    status: int
    model: str = "m"
    body: Callable[[int], bytes | Iterator[bytes]] = lambda i: b'{"inputs": [[%d, 0.5]]}' % i
    headers: dict[str, str] | None = None
    times: int = 1
    cache: str | None = None


def _too_large(_: int) -> Iterator[bytes]:
    # Streamed without a Content-Length, so BodyLimit cannot refuse it up front: whoever reads it meets the limit.
    yield b'{"inputs": [[' + b"1, " * LIMIT + b"1]]}"


OPEN_CASES = {
    "miss": Case(200, cache="miss"),
    "hit": Case(200, body=lambda i: b'{"inputs": [[%d, 1.5]]}' % i, times=2, cache="hit"),
    "no-cache": Case(200, body=lambda i: b'{"inputs": [[%d, 2.5]]}' % i, times=2,
                     headers={"Cache-Control": "no-cache, no-store"}),
    "404 unknown model": Case(404, model="nope"),
    "413 body over the limit": Case(413, body=_too_large),
    "422 not json": Case(422, body=lambda i: b'{"inputs": [[1, '),
    "422 wrong shape": Case(422, body=lambda i: b'{"inputs": {"nope": [1]}}'),
}
TOKEN_CASES = {
    "miss": Case(200, headers=AUTH, cache="miss"),
    "hit": Case(200, body=lambda i: b'{"inputs": [[%d, 1.5]]}' % i, headers=AUTH, times=2, cache="hit"),
    "401 no token": Case(401),
    "401 unknown token": Case(401, headers={"Authorization": "Bearer mrt_not-a-token"}),
    "401 malformed header": Case(401, headers={"Authorization": "Basic dXNlcjpwdw=="}),
    "404 unknown model": Case(404, model="nope", headers=AUTH),
    "413 body over the limit": Case(413, body=_too_large, headers=AUTH),
    "422 bad body": Case(422, body=lambda i: b'{"outputs": []}', headers=AUTH),
}


def _send(client: TestClient, path: str, case: Case, i: int) -> httpx.Response:
    response = None
    for _ in range(case.times):
        response = client.post(path, content=case.body(i), headers=case.headers)
    assert response is not None
    return response


def _framework_ran(*args: object) -> None:
    raise AssertionError("the framework route answered a request the fast path should have")


def _fast_answer(pair: Pair, path: str, case: Case, i: int, monkeypatch: pytest.MonkeyPatch) -> httpx.Response:
    with monkeypatch.context() as patch:
        patch.setattr(predict_routes, "_serving", _framework_ran)
        patch.setattr(deps, "get_services", _framework_ran)  # require_predict, the routes' token guard
        return _send(pair.fast, path, case, i)


def _assert_same(pair: Pair, route: str, case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    i = list(ROUTES).index(route)
    path = ROUTES[route].format(model=case.model)
    framework = _send(pair.framework, path, case, i)
    fast = _fast_answer(pair, path, case, i, monkeypatch)
    assert framework.status_code == case.status, framework.text
    assert (fast.status_code, fast.content) == (framework.status_code, framework.content)
    assert sorted(fast.headers.multi_items()) == sorted(framework.headers.multi_items())
    if case.cache is not None:
        assert fast.headers["x-cache"] == case.cache
    if case.status == 200:
        assert fast.headers["x-model-version"] == "1"
        sent = json.loads(case.body(i))["inputs"]  # type: ignore[arg-type]
        assert fast.json() == {"model": "m", "version": 1, "outputs": [[x + 1.0 for x in row] for row in sent]}
    if case.status == 401:
        assert fast.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("case", list(OPEN_CASES))
def test_with_open_predicts_the_fast_path_answers_as_the_route(open_pair: Pair, route: str, case: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _assert_same(open_pair, route, OPEN_CASES[case], monkeypatch)


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("case", list(TOKEN_CASES))
def test_with_predict_tokens_on_the_fast_path_answers_as_the_route(token_pair: Pair, route: str, case: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _assert_same(token_pair, route, TOKEN_CASES[case], monkeypatch)


@pytest.mark.parametrize("segment", ["01", "+1", "x", "0", str(2**31), "9" * 40])
def test_a_version_the_fast_path_cannot_parse_gets_the_routes_own_answer(open_pair: Pair, segment: str) -> None:
    path = f"/models/m/versions/{segment}/predict"
    fast = open_pair.fast.post(path, content=b'{"inputs": [[1, 2]]}')
    framework = open_pair.framework.post(path, content=b'{"inputs": [[1, 2]]}')
    assert fast.status_code in (200, 404, 422)
    assert (fast.status_code, fast.content) == (framework.status_code, framework.content)
    assert sorted(fast.headers.multi_items()) == sorted(framework.headers.multi_items())


def _asgi(client: TestClient, path: str, messages: list[Message]) -> list[Message]:
    """Call the app itself (no HTTP client), for what a client cannot be made to do: leave mid-body."""
    async def call() -> list[Message]:
        pending = list(messages)
        sent: list[Message] = []

        async def receive() -> Message:
            return pending.pop(0) if pending else {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
                 "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
        await client.app(scope, receive, send)
        return sent

    return client.portal.call(call)  # type: ignore[union-attr]


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_client_that_leaves_mid_body_is_recorded_alike(open_pair: Pair, route: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = ROUTES[route].format(model="m")
    half: list[Message] = [{"type": "http.request", "body": b'{"inputs": [[1', "more_body": True}]
    framework = _asgi(open_pair.framework, path, half)
    with monkeypatch.context() as patch:
        patch.setattr(predict_routes, "_serving", _framework_ran)
        patch.setattr(deps, "get_services", _framework_ran)
        fast = _asgi(open_pair.fast, path, half)
    assert fast[0]["status"] == 499
    assert fast == framework


def _predict_series(client: TestClient) -> list[str]:
    return sorted(line for line in client.get("/metrics").text.splitlines()
                  if line.startswith("modelreg_requests_total{") and 'route="/models/' in line)


def test_the_metrics_see_the_same_routes_and_outcomes(open_pair: Pair) -> None:
    # Every test of this module sends the same requests to both apps, so their series match too.
    for client in (open_pair.fast, open_pair.framework):
        for template in ROUTES.values():
            client.post(template.format(model="m"), content=b'{"inputs": [[7, 7]]}')
            client.post(template.format(model="nope"), content=b'{"inputs": [[7, 7]]}')
    fast = _predict_series(open_pair.fast)
    assert fast == _predict_series(open_pair.framework)
    for template in TEMPLATES:
        assert any(f'model="m",route="{template}",status="200",version="1"' in line for line in fast), fast
        assert any(f'model="<unknown>",route="{template}",status="404",version=""' in line for line in fast), fast
