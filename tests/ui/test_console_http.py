"""The console's rules over HTTP (the app in-process, the embedded default): sessions, CSRF, roles, errors."""

from __future__ import annotations

import json
import re
import time
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
    wrong = csrf[:-1] + ("1" if csrf.endswith("0") else "0")  # one digit off (never the same token)
    forged = app_client.post("/ui/models/demo/promote", data={"csrf": wrong, "version": "2", "confirmed": "yes"})
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
               for name in re.findall(r"(?:modelreg|process)_[a-z_]+", target["expr"])}
    assert "modelreg_inference_seconds_saved_total" in queried and "modelreg_cache_requests_total" in queried
    missing = sorted(name for name in queried if not re.search(rf"^{name}[{{ ]", exported, re.M))
    assert missing == []


def test_the_model_page_shows_what_a_shadow_compared(app_client: TestClient) -> None:
    sign_in(app_client)
    assert 'id="shadow-figures"' not in app_client.get("/ui/models/demo").text  # no shadow, no figures
    assert app_client.put("/admin/models/demo/shadow", json={"version": 2, "percent": 100},
                          headers=AUTH).status_code == 200
    for n in range(3):
        assert app_client.post("/models/demo/predict", json={"inputs": [[float(n)]]}).status_code == 200
    deadline = time.monotonic() + 10
    while True:  # the shadow runs in the background: wait for its three comparisons
        expected = app_client.get("/admin/models/demo/shadow", headers=AUTH).json()
        if expected["compared"] == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert expected["compared"] == 3 and expected["agreed"] == 0  # v2 adds 2.0, v1 1.0: never the same
    page = app_client.get("/ui/models/demo").text
    figures = re.search(r'id="shadow-figures">([^<]*)<', page)
    assert figures is not None, page
    text = " ".join(figures.group(1).split())
    assert f"Compared {expected['compared']} · agreed {expected['agreed']}" in text, text


def test_a_promotion_from_the_console_can_carry_a_guard(app_client: TestClient) -> None:
    csrf = sign_in(app_client)
    form = {"csrf": csrf, "confirmed": "yes", "version": "2", "guard_error_rate": "0.05", "guard_window": "120",
            "guard_min_requests": "", "guard_p99_ms": ""}
    answer = app_client.post("/ui/models/demo/promote", data=form, headers={"Origin": "http://testserver"})
    assert answer.status_code == 200 and "Guarded for 120s" in answer.text, answer.text
    guard = app_client.get("/admin/models/demo", headers=AUTH).json()["guard"]
    assert guard["version"] == 2 and guard["replaced"] == 1 and guard["spec"]["max_error_rate"] == 0.05
    bad = app_client.post("/ui/models/demo/promote", headers={"Origin": "http://testserver"},
                          data={**form, "version": "1", "guard_error_rate": "2"})
    assert bad.status_code == 422 and "guard" in bad.text and "less than or equal to 1" in bad.text
    assert production(app_client) == 2  # the refused form changed nothing
