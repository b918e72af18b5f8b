"""The console's rules over HTTP (the app in-process, the embedded default): sessions, CSRF, roles, errors."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from modelreg.api.app import create_app
from modelreg.api.settings import Settings
from tests.api.conftest import AUTH, TOKEN, echo_artifact
from tests.e2e.conftest import ROOT


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", admin_token=TOKEN, unload_grace_seconds=0)
    with TestClient(create_app(settings)) as client:
        assert client.post("/admin/models", json={"name": "demo", "runtime": "echo"}, headers=AUTH).status_code == 201
        for offset in (1.0, 2.0):
            client.post("/admin/models/demo/versions", files={"artifact": ("m.json", echo_artifact(offset))},
                        headers=AUTH)
        assert client.post("/admin/models/demo/promote", json={"version": 1}, headers=AUTH).status_code == 200
        yield client


def sign_in(client: TestClient, token: str = TOKEN) -> str:
    """Sign in and return the session's CSRF token (as the model page's forms carry it)."""
    answer = client.post("/ui/login", data={"token": token, "next": "/ui/models"}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    page = client.get("/ui/models/demo")
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert found is not None
    return found.group(1)


def production(client: TestClient) -> int:
    return int(client.get("/admin/models/demo", headers=AUTH).json()["production"])


def test_without_a_session_every_page_leads_to_sign_in(app_client: TestClient) -> None:
    for path in ("/ui", "/ui/models", "/ui/models/demo", "/ui/plugins"):
        answer = app_client.get(path)
        assert answer.url.path == "/ui/login", path
    answer = app_client.post("/ui/login", data={"token": "not-a-token"})
    assert answer.status_code == 401 and "invalid or revoked token" in answer.text


def test_the_session_cookie_is_httponly_strict_and_secure_over_https(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", admin_token=TOKEN)
    with TestClient(create_app(settings), base_url="https://console.example") as client:
        answer = client.post("/ui/login", data={"token": TOKEN}, follow_redirects=False)
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("modelreg_console="))
    assert {"HttpOnly", "Secure", "SameSite=strict", "Path=/ui"} <= {p.strip() for p in cookie.split(";")}
    assert TOKEN not in cookie  # encoded, not in the clear (still the token: the cookie is the credential)


def test_a_change_needs_the_csrf_token_and_a_confirmation(app_client: TestClient) -> None:
    csrf = sign_in(app_client)
    refused = app_client.post("/ui/models/demo/promote", data={"version": "2", "confirmed": "yes"})
    assert refused.status_code == 403 and "CSRF token is missing or wrong" in refused.text
    forged = app_client.post("/ui/models/demo/promote", data={"csrf": csrf[:-1] + "0", "version": "2",
                                                              "confirmed": "yes"})
    assert forged.status_code == 403
    other_site = app_client.post("/ui/models/demo/promote", data={"csrf": csrf, "version": "2", "confirmed": "yes"},
                                 headers={"Origin": "https://evil.example"})
    assert other_site.status_code == 403 and "another site" in other_site.text
    asked = app_client.post("/ui/models/demo/promote", data={"csrf": csrf, "version": "2"})
    assert asked.status_code == 200 and "Make demo v2 production?" in asked.text
    assert production(app_client) == 1  # asking changed nothing
    done = app_client.post("/ui/models/demo/promote", data={"csrf": csrf, "version": "2", "confirmed": "yes"})
    assert "demo v2 is production (was v1)" in done.text and production(app_client) == 2
    history = app_client.get("/admin/models/demo/history", headers=AUTH).json()
    assert history[-1]["action"] == "promote" and history[-1]["actor"] == "bootstrap"


def test_a_reader_sees_everything_and_changes_nothing(app_client: TestClient) -> None:
    reader = app_client.post("/admin/tokens", json={"name": "viewer", "role": "reader"}, headers=AUTH).json()["token"]
    csrf = sign_in(app_client, reader)
    page = app_client.get("/ui/models/demo").text
    assert "reader</strong> role" in page and page.count("<fieldset disabled>") >= 5
    for action, fields in (("promote", {"version": "2"}), ("purge", {}), ("alias", {"alias": "x", "version": "2"})):
        answer = app_client.post(f"/ui/models/demo/{action}", data={"csrf": csrf, "confirmed": "yes", **fields})
        assert answer.status_code == 403 and "has role &#39;reader&#39;" in answer.text, action
    assert production(app_client) == 1


def test_errors_are_pages_on_the_console_and_json_on_the_api(app_client: TestClient) -> None:
    csrf = sign_in(app_client)
    missing = app_client.post("/ui/models/demo/promote", data={"csrf": csrf, "version": "9", "confirmed": "yes"})
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "demo" in missing.text and "9" in missing.text
    assert app_client.get("/ui/models/nope").status_code == 404
    assert app_client.get("/ui/no/such/page").status_code == 404
    api = app_client.get("/admin/models/nope", headers=AUTH)
    assert api.status_code == 404 and "detail" in api.json()


def test_a_revoked_token_ends_its_session_at_once(app_client: TestClient) -> None:
    reader = app_client.post("/admin/tokens", json={"name": "gone", "role": "reader"}, headers=AUTH).json()["token"]
    sign_in(app_client, reader)
    app_client.delete("/admin/tokens/gone", headers=AUTH)
    assert app_client.get("/ui/models").url.path == "/ui/login"


def test_sign_in_never_redirects_off_the_console(app_client: TestClient) -> None:
    answer = app_client.post("/ui/login", data={"token": TOKEN, "next": "//evil.example/x"}, follow_redirects=False)
    assert answer.headers["location"] == "/ui/models"


def test_predictions_answered_by_the_fast_path_feed_the_metrics_and_the_page(app_client: TestClient) -> None:
    for _ in range(4):
        assert app_client.post("/models/demo/predict", json={"inputs": [[1.0]]}).status_code == 200
    metrics = app_client.get("/metrics").text
    assert 'modelreg_cache_requests_total{model="demo",outcome="hit",version="1"} 3.0' in metrics
    assert 'modelreg_cache_requests_total{model="demo",outcome="miss",version="1"} 1.0' in metrics
    saved = re.search(r'modelreg_inference_seconds_saved_total\{model="demo",version="1"\} (\S+)', metrics)
    assert saved is not None and float(saved.group(1)) > 0
    app_client.post("/models/nope/predict", json={"inputs": [[1.0]]})  # an unknown name adds no series
    assert 'model="nope"' not in app_client.get("/metrics").text
    sign_in(app_client)
    row = app_client.get("/ui/models").text
    assert 'class="num hit-ratio">75%<' in row


def test_the_grafana_dashboard_graphs_only_metrics_the_server_exports(app_client: TestClient) -> None:
    app_client.post("/models/demo/predict", json={"inputs": [[1.0]]})
    app_client.post("/models/demo/predict", json={"inputs": [[1.0]]})
    exported = app_client.get("/metrics").text
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "modelreg-dashboard.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"modelreg_[a-z_]+", target["expr"])}
    assert "modelreg_inference_seconds_saved_total" in queried and "modelreg_cache_requests_total" in queried
    missing = sorted(name for name in queried if not re.search(rf"^{name}[{{ ]", exported, re.M))
    assert missing == []
