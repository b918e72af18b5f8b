"""Releasing safely through real processes: three replicas on one PostgreSQL and one Redis.

A weighted canary lands on its weights with sticky keys and never an answer from another version
than the one named; a shadowed version's answers are warm the moment it is promoted; a guarded
promotion of a version failing half its requests is rolled back by the guard on every replica.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import create_engine, make_url, text

from tests.api.conftest import AUTH, TOKEN
from tests.e2e.conftest import Replica, create_echo_model, until

pytestmark = pytest.mark.slow
OFFSETS = {1: 1000.0, 2: 2000.0}  # version v of an echo model answers x + OFFSETS[v]


class Fleet:
    """Three replicas sharing a database, a Redis prefix and an artifact folder (one per test module)."""

    def __init__(self, replicas: list[Replica]) -> None:
        self.replicas = replicas
        self.urls = [r.url for r in replicas]

    def admin(self, method: str, path: str, url: str | None = None, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{url or self.urls[0]}{path}", headers=AUTH, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def fleet(postgres_admin_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("releases")
    database = f"modelreg_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    prefix = f"modelreg-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "MODELREG_ADMIN_TOKEN": TOKEN, "MODELREG_DATA_DIR": str(tmp / "data"),
           "MODELREG_DATABASE_URL": make_url(postgres_admin_url).set(database=database).render_as_string(
               hide_password=False),
           "MODELREG_REDIS_URL": redis_url, "MODELREG_AUTO_MIGRATE": "true", "MODELREG_POLL_INTERVAL_SECONDS": "0.5",
           "MODELREG_CACHE_PREFIX": prefix, "MODELREG_PLUGINS": "echo,faulty"}
    replicas = [Replica(env, tmp / f"replica-{i}.log") for i in range(3)]
    try:
        replicas[0].start()  # migrates the database first
        for replica in replicas[1:]:
            replica.start()
        yield Fleet(replicas)
    finally:
        for replica in replicas:
            replica.stop()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.unlink(*keys)
        client.close()


async def predict_many(urls: list[str], model: str, requests: list[tuple[float, str | None]],
                       concurrency: int = 24) -> list[tuple[float, str | None, httpx.Response]]:
    """Each (x, request key) once, spread over the replicas round robin, ``concurrency`` at a time."""
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=30) as client:
        async def one(i: int, x: float, key: str | None) -> tuple[float, str | None, httpx.Response]:
            headers = {"X-Request-Key": key} if key is not None else {}
            async with limit:
                response = await client.post(f"{urls[i % len(urls)]}/models/{model}/predict",
                                             json={"inputs": [[x]]}, headers=headers)
            return x, key, response

        return list(await asyncio.gather(*(one(i, x, key) for i, (x, key) in enumerate(requests))))


def answered_by(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    return int(response.headers["x-model-version"])


def test_a_90_10_split_lands_on_its_weights_with_sticky_keys_and_answers_that_match_their_version(
        fleet: Fleet) -> None:
    create_echo_model(fleet.urls[0], "split", [OFFSETS[1], OFFSETS[2]])
    assert fleet.admin("POST", "/admin/models/split/promote", json={"version": 1}).status_code == 200
    assert fleet.admin("PUT", "/admin/models/split/aliases/canary", json={"version": 2}).status_code == 200
    put = fleet.admin("PUT", "/admin/models/split/traffic", json={"weights": {"production": 90, "canary": 10}})
    assert put.status_code == 200, put.text
    def splits(url: str) -> bool:
        probes = asyncio.run(predict_many([url], "split", [(0.0, f"probe-{i}") for i in range(60)]))
        return any(answered_by(r) == 2 for _, _, r in probes)

    for url in fleet.urls:  # every replica follows the split (pub/sub, else its poll)
        until(lambda url=url: splits(url), f"{url} splits traffic", timeout=10)

    # 2,000 requests: the canary's share has a standard deviation of 0.67 points, so ±3 is 4.5 of them.
    random_requests = [(float(i % 40), None) for i in range(2000)]  # hits and misses, in both arms
    answers = asyncio.run(predict_many(fleet.urls, "split", random_requests))
    versions = Counter(answered_by(r) for _, _, r in answers)
    assert abs(versions[2] / len(answers) - 0.10) <= 0.03, versions
    wrong = [(x, r.headers["x-model-version"], r.json()["outputs"]) for x, _, r in answers
             if r.json()["outputs"] != [[x + OFFSETS[answered_by(r)]]]]
    assert wrong == []

    keyed = [(float(i % 7), f"user-{i % 200}") for i in range(800)]  # each of 200 keys 4 times, over 3 replicas
    arms: dict[str, set[int]] = {}
    for x, key, response in asyncio.run(predict_many(fleet.urls, "split", keyed)):
        assert response.json()["outputs"] == [[x + OFFSETS[answered_by(response)]]]
        arms.setdefault(str(key), set()).add(answered_by(response))
    assert all(len(seen) == 1 for seen in arms.values()), "a request key changed arm"
    assert 0 < sum(seen == {2} for seen in arms.values()) < 200 * 0.2

    history = fleet.admin("GET", "/admin/models/split/history").json()
    assert history[-1]["action"] == "traffic"
    assert fleet.admin("DELETE", "/admin/models/split/traffic").status_code in (200, 204)
    after = asyncio.run(predict_many(fleet.urls[:1], "split", [(1.0, f"user-{i}") for i in range(100)]))
    assert {answered_by(r) for _, _, r in after} == {1}  # the replica that took the change: all production


def test_after_a_shadow_period_and_a_promotion_the_first_repeat_of_each_shadowed_input_is_a_hit(
        fleet: Fleet) -> None:
    create_echo_model(fleet.urls[0], "warm", [OFFSETS[1], OFFSETS[1] + 0.5])  # v2 is 0.5 off v1
    assert fleet.admin("POST", "/admin/models/warm/promote", json={"version": 1}).status_code == 200
    put = fleet.admin("PUT", "/admin/models/warm/shadow", json={"version": 2, "percent": 100})
    assert put.status_code == 200, put.text

    def shadowing(url: str) -> bool:
        figures = fleet.admin("GET", "/admin/models/warm/shadow", url=url).json()
        return figures.get("version") == 2
    for url in fleet.urls:
        until(lambda url=url: shadowing(url), f"{url} knows the shadow", timeout=10)

    inputs = [float(100 + i) for i in range(30)]
    answers = asyncio.run(predict_many(fleet.urls, "warm", [(x, None) for x in inputs]))
    assert {answered_by(r) for _, _, r in answers} == {1}  # production answered; the shadow only listened
    assert all(r.json()["outputs"] == [[x + OFFSETS[1]]] for x, _, r in answers)

    figures = until(lambda: (f := fleet.admin("GET", "/admin/models/warm/shadow").json())["compared"] >= 30 and f,
                    "the pooled shadow figures count every request", timeout=15)
    assert (figures["compared"], figures["agreed"], figures["dropped"]) == (30, 0, 0)
    assert figures["max_abs_diff"] == pytest.approx(0.5)
    metrics = httpx.get(f"{fleet.urls[0]}/metrics", timeout=10).text
    assert 'modelreg_shadow_compared_total{model="warm",version="2"}' in metrics

    assert fleet.admin("POST", "/admin/models/warm/promote", json={"version": 2}).status_code == 200
    for url in fleet.urls:
        until(lambda url=url: answered_by(httpx.post(f"{url}/models/warm/predict", json={"inputs": [[-1.0]]},
                                                     timeout=10)) == 2, f"{url} serves v2", timeout=10)

    repeats = asyncio.run(predict_many(fleet.urls, "warm", [(x, None) for x in inputs]))
    assert [(answered_by(r), r.headers["x-cache"]) for _, _, r in repeats] == [(2, "hit")] * len(inputs)
    assert all(r.json()["outputs"] == [[x + OFFSETS[1] + 0.5]] for x, _, r in repeats)  # v2's own answers


def test_a_guarded_promotion_of_a_version_failing_half_its_requests_is_rolled_back_on_every_replica(
        fleet: Fleet) -> None:
    with httpx.Client(base_url=fleet.urls[0], headers=AUTH, timeout=30) as admin:
        assert admin.post("/admin/models", json={"name": "fragile", "runtime": "faulty"}).status_code == 201
        for artifact in ({"offset": 1.0}, {"offset": 2.0, "fail_odd": True}):
            uploaded = admin.post("/admin/models/fragile/versions",
                                  files={"artifact": ("f.json", json.dumps(artifact).encode())})
            assert uploaded.json()["status"] == "ready", uploaded.text
        assert admin.post("/admin/models/fragile/promote", json={"version": 1}).status_code == 200
        guard = {"window_seconds": 120, "min_requests": 20, "max_error_rate": 0.1}
        promoted = admin.post("/admin/models/fragile/promote", json={"version": 2, "guard": guard})
        assert promoted.status_code == 200, promoted.text
        assert admin.get("/admin/models/fragile").json()["guard"]["version"] == 2

    def rolled_back_everywhere() -> bool:
        answers = asyncio.run(predict_many(fleet.urls, "fragile", [(float(i), None) for i in range(30)]))
        return all(r.status_code == 200 and r.headers["x-model-version"] == "1"
                   for _, _, r in answers[-3:])  # the last round on each replica
    until(rolled_back_everywhere, "the guard rolled back on every replica", timeout=20, every=0.2)
    for url in fleet.urls:
        answer = httpx.post(f"{url}/models/fragile/predict", json={"inputs": [[3.0]]}, timeout=10)
        assert (answer.status_code, answer.headers["x-model-version"], answer.json()["outputs"]) == (200, "1", [[4.0]])

    history = fleet.admin("GET", "/admin/models/fragile/history").json()
    rollback = history[-1]
    assert (rollback["action"], rollback["actor"], rollback["from_version"], rollback["to_version"]) == (
        "rollback", "guard", 2, 1)
    assert "max_error_rate 0.1" in rollback["reason"] and "error rate" in rollback["reason"]
    assert sum(1 for row in history if row["actor"] == "guard") == 1  # one rollback, however many replicas saw it
    assert fleet.admin("GET", "/admin/models/fragile").json()["guard"] is None

