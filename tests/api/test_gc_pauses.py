"""A server keeps what lives as long as it does out of the garbage collector's full passes: after
start-up and after a model loads, those objects are frozen, so a full pass walks only what requests
made since (it would otherwise stop the event loop for every object of torch and ONNX Runtime)."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from modelreg.api.app import create_app
from modelreg.api.settings import Settings
from tests.api.conftest import AUTH, TOKEN


@pytest.fixture
def unfrozen_after() -> Iterator[None]:
    yield
    gc.unfreeze()  # give the rest of the test process its collector back


def test_a_server_freezes_its_start_up_and_each_loaded_model_out_of_the_gcs_passes(
        tmp_path: Path, unfrozen_after: None) -> None:
    gc.unfreeze()
    settings = Settings(data_dir=tmp_path, admin_token=TOKEN, plugins="echo", gc_freeze=True)
    with TestClient(create_app(settings)) as client:
        after_start = gc.get_freeze_count()
        assert after_start > 10_000  # the imports and the app, at least
        garbage = [[i] for i in range(50_000)]  # made after start-up: a full pass still walks these
        assert client.post("/admin/models", json={"name": "m", "runtime": "echo"}, headers=AUTH).status_code == 201
        up = client.post("/admin/models/m/versions", headers=AUTH,
                         files={"artifact": ("m.json", json.dumps({"offset": 1.0}).encode())},
                         data={"metadata": json.dumps({"format": "json"})})
        assert up.status_code == 201, up.text
        assert client.post("/admin/models/m/promote", json={"version": 1}, headers=AUTH).status_code == 200
        assert client.post("/models/m/predict", json={"inputs": [[1.0]]}).json()["outputs"] == [[2.0]]
        assert gc.get_freeze_count() > after_start + 50_000  # the load froze what existed then
        del garbage
        started = time.perf_counter()
        gc.collect()
        walked_frozen = time.perf_counter() - started
        gc.unfreeze()
        started = time.perf_counter()
        gc.collect()
        walked_all = time.perf_counter() - started
        assert walked_frozen < walked_all  # the pass a request may wait behind is the shorter one


def test_the_setting_off_freezes_nothing(tmp_path: Path, unfrozen_after: None) -> None:
    gc.unfreeze()
    with TestClient(create_app(Settings(data_dir=tmp_path, admin_token=TOKEN, gc_freeze=False))):
        assert gc.get_freeze_count() == 0
