"""Schemathesis against a live server: every operation of the OpenAPI, with an admin token and without
one, never a 5xx (`not_a_server_error`: the contract checks are the other tests' job).

The schema is the app's own (``create_app().openapi()``, nothing started); the requests go to a real
uvicorn process on SQLite and the embedded cache, seeded with models so that generated paths reach
real models, versions and aliases now and then rather than only 404s.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from modelreg.api.app import create_app
from modelreg.api.settings import Settings
from tests.api.conftest import AUTH, TOKEN
from tests.e2e.conftest import Replica, create_echo_model

pytestmark = [pytest.mark.slow, pytest.mark.soak]  # a long loop: ./scripts/test runs it with MODELREG_SOAK=1
MODELS = ["m", "other"]
EXAMPLES_PER_OPERATION = 25
KNOWN = {"name": st.sampled_from(MODELS), "version": st.sampled_from([1, 2]),
         "alias": st.sampled_from(["staging", "production"])}

schema = schemathesis.openapi.from_dict(create_app(Settings(admin_token=TOKEN)).openapi())
schema.config.generation.update(max_examples=EXAMPLES_PER_OPERATION)


@schema.hook
def flatmap_path_parameters(context: Any, parameters: dict[str, Any]) -> Any:
    """Half the time a seeded model, version or alias instead of the generated one."""
    if not parameters:
        return st.just(parameters)
    return st.fixed_dictionaries({key: st.one_of(st.just(value), KNOWN[key]) if key in KNOWN else st.just(value)
                                  for key, value in parameters.items()})


@schema.hook
def flatmap_body(context: Any, body: Any) -> Any:
    """Half the time an installed runtime and a valid name, so that model creation gets past those checks."""
    if isinstance(body, dict) and "runtime" in body:
        valid = st.from_regex(r"[A-Za-z0-9._-]{1,32}", fullmatch=True).map(
            lambda name: {**body, "name": name, "runtime": "echo"})
        return st.one_of(st.just(body), valid)
    return st.just(body)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fuzz")
    env = {**os.environ, "MODELREG_DATABASE_URL": f"sqlite:///{tmp / 'registry.db'}", "MODELREG_ADMIN_TOKEN": TOKEN,
           "MODELREG_DATA_DIR": str(tmp / "data"), "MODELREG_AUTO_MIGRATE": "true", "MODELREG_PLUGINS": "echo",
           "MODELREG_MAX_ARTIFACT_BYTES": "65536", "MODELREG_CACHE_PREFIX": f"fuzz-{uuid.uuid4().hex[:8]}"}
    env.pop("MODELREG_REDIS_URL", None)
    replica = Replica(env, tmp / "server.log")
    replica.start()
    try:
        yield replica.url
    finally:
        replica.stop()


@pytest.fixture
def seeded(live_server: str) -> str:
    """The server with its models back (an operation before may have deleted or changed them)."""
    with httpx.Client(base_url=live_server, headers=AUTH, timeout=30) as admin:
        for name in MODELS:
            if admin.get(f"/admin/models/{name}").status_code == 404:
                create_echo_model(live_server, name, [1.0, 2.0])
            admin.patch(f"/admin/models/{name}", json={"device": None}).raise_for_status()
            admin.post(f"/admin/models/{name}/promote", json={"version": 1}).raise_for_status()
        admin.put("/admin/models/m/aliases/staging", json={"version": 2}).raise_for_status()
    return live_server


@schema.parametrize()
@pytest.mark.parametrize("headers", [AUTH, {}], ids=["admin", "anonymous"])
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=EXAMPLES_PER_OPERATION,
          database=None)
def test_no_operation_answers_a_server_error(case: schemathesis.Case, headers: dict[str, str], seeded: str) -> None:
    case.call_and_validate(base_url=seeded, headers=headers, checks=[not_a_server_error], timeout=30)
