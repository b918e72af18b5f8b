"""The web console in a real browser against a real server process (PostgreSQL + Redis).

The story of one release: an admin signs in, opens a model, promotes a version (with the keyboard)
and sees predict answer with it, rolls back, splits traffic 50/50; a reader sees the same pages with
every button disabled, and the server refuses a forged POST and a POST without the CSRF token.
Screenshots of each page land in docs/screenshots/ when MODELREG_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import AUTH
from tests.e2e.conftest import ROOT, StartReplicas, create_echo_model

pytestmark = pytest.mark.slow
SHOTS = ROOT / "docs" / "screenshots"
# Every visible form control must have a label a screen reader announces.
UNLABELLED = """() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')).map(el => el.outerHTML)"""


def shot(page: Any, name: str, tmp_path: Path) -> None:
    folder = SHOTS if os.environ.get("MODELREG_UPDATE_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def labelled(page: Any) -> None:
    assert page.evaluate(UNLABELLED) == [], "form controls without a label"


def predict(url: str, key: str | None = None) -> httpx.Response:
    headers = {"X-Request-Key": key} if key else {}
    answer = httpx.post(f"{url}/models/demo/predict", json={"inputs": [[1.0]]}, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer


def sign_in(page: Any, url: str, token: str) -> None:
    page.goto(f"{url}/ui")
    assert "/ui/login" in page.url  # no session: the sign-in page
    page.get_by_label("API token (admin or reader)").fill(token)
    page.click("#sign-in")
    page.wait_for_url(re.compile(r".*/ui/models$"))


def confirm(page: Any, button: str) -> str:
    """Press ``button``, confirm on the confirmation page, return the flash message shown afterwards."""
    page.click(button)
    page.wait_for_selector("#confirm-question")
    page.click("#confirm")
    page.wait_for_selector("#flash")
    return str(page.inner_text("#flash"))


def test_an_admin_releases_and_a_reader_only_looks(browser: Any, start_replicas: StartReplicas,
                                                   postgres_url: str, redis_url: str, tmp_path: Path) -> None:
    (replica,) = start_replicas(1, database_url=postgres_url, redis_url=redis_url)
    url = replica.url
    create_echo_model(url, "demo", [1.0, 2.0])  # v1 answers x + 1, v2 answers x + 2
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as api:
        assert api.post("/admin/models/demo/promote", json={"version": 1}).status_code == 200
        reader_token = api.post("/admin/tokens", json={"name": "viewer", "role": "reader"}).json()["token"]
        has_traffic = api.get("/admin/models/demo/traffic").status_code == 200
    for _ in range(5):
        predict(url)

    admin = browser.new_context(viewport={"width": 1280, "height": 900})
    page = admin.new_page()
    sign_in(page, url, os.environ.get("MODELREG_TEST_TOKEN", AUTH["Authorization"].split()[1]))
    assert "Signed in as bootstrap (admin)" in page.inner_text("#flash")
    row = page.locator("#model-demo")
    assert row.locator(".live").inner_text() == "v1"
    assert row.locator(".hit-ratio").inner_text() == "80%"  # 1 miss, 4 hits, counted by the fast path
    labelled(page)
    shot(page, "models", tmp_path)

    page.click("#model-demo a")
    page.wait_for_selector("#versions")
    assert page.inner_text("#production") == "v1"
    assert page.locator("#chart-requests").count() == 1
    labelled(page)
    shot(page, "model", tmp_path)

    # Promote v2 with the keyboard: choose it, Tab past the (closed) guard options to the button,
    # Enter, Enter on the confirmation.
    page.select_option("#promote-version", "2")
    page.focus("#promote-version")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") == "SUMMARY"  # "Guard (optional)", folded
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "promote"
    page.keyboard.press("Enter")
    page.wait_for_selector("#confirm-question")
    assert "Make demo v2 production?" in page.inner_text("#confirm-question")
    shot(page, "confirm", tmp_path)
    assert page.evaluate("document.activeElement.id") == "confirm"  # autofocus: Enter confirms
    page.keyboard.press("Enter")
    page.wait_for_selector("#flash")
    assert "demo v2 is production (was v1)" in page.inner_text("#flash")
    answer = predict(url)
    assert answer.headers["x-model-version"] == "2" and answer.json()["outputs"] == [[3.0]]

    assert "Rolled back demo to v1" in confirm(page, "#rollback")
    assert predict(url).headers["x-model-version"] == "1"
    assert "promote" in page.inner_text("#history") and "rollback" in page.inner_text("#history")

    page.fill("#alias-name", "canary")
    page.select_option("#alias-version", "2")
    assert "Alias canary of demo points at v2" in confirm(page, "#set-alias")
    if has_traffic:
        page.fill("#weight-production", "50")
        page.fill("#weight-canary", "50")
        assert "production 50%, canary 50%" in confirm(page, "#set-traffic")
        assert "production 50%" in page.inner_text("#traffic")
        versions = {predict(url, key=f"user-{i}").headers["x-model-version"] for i in range(40)}
        assert versions == {"1", "2"}  # both arms answer
    shot(page, "model-after", tmp_path)

    # A POST without the CSRF token is refused, even from a signed-in admin.
    refused = admin.request.post(f"{url}/ui/models/demo/purge", form={"confirmed": "yes"})
    assert refused.status == 403 and "CSRF" in refused.text()

    page.goto(f"{url}/ui/plugins")
    assert "available" in page.inner_text("#plugin-echo")
    shot(page, "plugins", tmp_path)
    admin.close()

    reader = browser.new_context(viewport={"width": 1280, "height": 900})
    page = reader.new_page()
    sign_in(page, url, reader_token)
    page.click("#model-demo a")
    page.wait_for_selector("#read-only")
    for button in ("#promote", "#rollback", "#set-alias", "#purge", "#set-traffic", "#set-shadow"):
        assert page.locator(button).is_disabled(), button
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    forged = reader.request.post(f"{url}/ui/models/demo/promote",
                                 form={"csrf": csrf, "version": "2", "confirmed": "yes"})
    assert forged.status == 403 and "role 'admin'" in html.unescape(forged.text())
    assert httpx.get(f"{url}/admin/models/demo", headers=AUTH).json()["production"] == 1  # nothing changed
    shot(page, "model-reader", tmp_path)
    page.click("button:has-text('Sign out')")
    page.wait_for_url(re.compile(r".*/ui/login$"))
    page.goto(f"{url}/ui/models")
    assert "/ui/login" in page.url  # signed out: the cookie is gone
    reader.close()
