"""modelreg.Client against a real uvicorn server: a model's life in Python, and the typed errors it raises."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest

import modelreg
from modelreg import (
    Client,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidRequest,
    ModelregError,
    NotFound,
    ServerError,
    Unauthorized,
    Unavailable,
)
from modelreg.client import POOL_LIMITS
from modelreg.client_errors import error_for
from tests.cli.conftest import Server, free_port
from tests.fixtures.tiny_models import TinyModel, sample_input


def test_a_model_from_creation_to_purge(client: Client, tiny_onnx: TinyModel) -> None:
    created = client.create_model("tiny", "onnx", description="Linear(4, 3) + ReLU", tags={"team": "ml"})
    assert (created["name"], created["runtime"], created["tags"]) == ("tiny", "onnx", {"team": "ml"})
    assert "tiny" in [m["name"] for m in client.list_models()]

    seen: list[tuple[int, int | None]] = []
    size = tiny_onnx.path.stat().st_size
    first = client.upload("tiny", tiny_onnx.path, metadata=tiny_onnx.metadata(),
                          progress=lambda sent, total: seen.append((sent, total)))
    assert (first["version"], first["status"]) == (1, "ready")
    assert seen[0] == (0, size) and seen[-1] == (size, size)
    assert [sent for sent, _ in seen] == sorted(sent for sent, _ in seen)
    with tiny_onnx.path.open("rb") as file:  # a binary file object works as well as a path
        second = client.upload("tiny", file, metadata=tiny_onnx.metadata())
    assert (second["version"], second["status"], second["sha256"]) == (2, "ready", first["sha256"])
    assert [v["version"] for v in client.list_versions("tiny")] == [1, 2]
    assert client.get_version("tiny", 2)["format"] == "onnx"

    assert client.promote("tiny", 1)["production"] == 1
    x = sample_input()
    missed = client.predict("tiny", x.tolist())
    assert (missed.model, missed.version, missed.cache) == ("tiny", 1, "miss")
    np.testing.assert_allclose(missed.outputs, tiny_onnx.expected(x), rtol=1e-5, atol=1e-6)
    hit = client.predict("tiny", x)  # a numpy array is sent as its nested list
    assert (hit.version, hit.cache, hit.outputs) == (1, "hit", missed.outputs)
    assert client.predict("tiny", x, version=2).version == 2

    assert client.set_alias("tiny", "staging", 2) == {"model": "tiny", "alias": "staging", "version": 2}
    staged = client.predict("tiny", x, alias="staging")
    assert staged.version == 2
    np.testing.assert_allclose(staged.outputs, tiny_onnx.expected(x), rtol=1e-5, atol=1e-6)
    client.delete_alias("tiny", "staging")
    assert "staging" not in client.get_model("tiny")["aliases"]

    inference = client.infer("tiny", [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel()}])
    assert (inference.model, inference.version) == ("tiny", 1)
    y = inference.output("y")
    assert y["shape"] == [5, 3]
    np.testing.assert_allclose(np.reshape(y["data"], y["shape"]), tiny_onnx.expected(x), rtol=1e-5, atol=1e-6)
    assert client.infer("tiny", [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0.0] * 4}],
                        version=2).version == 2

    assert client.promote("tiny", 2)["previous"] == 1
    rolled = client.rollback("tiny")
    assert (rolled["previous"], rolled["production"]) == (2, 1)
    assert [(e["action"], e["from_version"], e["to_version"]) for e in client.history("tiny")] == [
        ("create", None, None), ("promote", None, 1), ("alias", None, 2), ("alias_delete", 2, None),
        ("promote", 1, 2), ("rollback", 2, 1)]

    generation = client.get_model("tiny")["generation"]
    assert client.purge("tiny")["generation"] == generation + 1
    after = client.predict("tiny", x)
    assert (after.version, after.cache) == (1, "miss")
    assert client.predict("tiny", x, cache_control="no-cache").cache != "hit"


def test_update_and_delete_a_model(client: Client) -> None:
    client.create_model("short-lived", "onnx")
    updated = client.update_model("short-lived", cache_ttl_seconds=5, max_batch_size=8, device="cpu")
    assert (updated["cache"]["ttl_seconds"], updated["batching"]["max_batch_size"], updated["device"]) == (5, 8, "cpu")
    assert client.update_model("short-lived", device=None)["device"] is None  # None: back to the server default
    client.delete_model("short-lived")
    with pytest.raises(NotFound):
        client.get_model("short-lived")


def test_an_upload_from_a_pipe_streams_with_an_unknown_total(client: Client, tiny_onnx: TinyModel) -> None:
    client.create_model("piped", "onnx")
    read_end, write_end = os.pipe()
    feeder = threading.Thread(target=lambda: (os.write(write_end, tiny_onnx.path.read_bytes()), os.close(write_end)))
    feeder.start()
    seen: list[tuple[int, int | None]] = []
    with os.fdopen(read_end, "rb") as pipe:
        record = client.upload("piped", pipe, filename="tiny.onnx", metadata=tiny_onnx.metadata(),
                               progress=lambda sent, total: seen.append((sent, total)))
    feeder.join()
    assert record["status"] == "ready"
    assert seen[-1] == (tiny_onnx.path.stat().st_size, None)


def test_a_failed_validation_is_an_answer_not_an_error(client: Client) -> None:
    client.create_model("not-a-model", "onnx")
    record = client.upload("not-a-model", io.BytesIO(b"these bytes are no ONNX graph"), filename="junk.onnx")
    assert record["status"] == "failed" and record["error"]


def test_an_unknown_model_is_not_found_with_the_servers_detail(client: Client) -> None:
    with pytest.raises(NotFound) as caught:
        client.get_model("ghost")
    assert caught.value.status == 404
    assert "model 'ghost' does not exist" in caught.value.detail
    assert str(caught.value).startswith("HTTP 404: model 'ghost' does not exist")
    with pytest.raises(NotFound):
        client.predict("ghost", [[1.0, 2.0, 3.0, 4.0]])


def test_no_token_is_unauthorized_and_a_reader_token_is_forbidden_to_change(client: Client, server: Server) -> None:
    with Client(server.url) as anonymous, pytest.raises(Unauthorized) as caught:
        anonymous.list_models()
    assert caught.value.status == 401 and caught.value.detail

    secret = client.create_token("client-reader", role="reader")["token"]
    with Client(server.url, token=secret) as reader:
        assert isinstance(reader.list_models(), list)
        with pytest.raises(Forbidden) as refused:
            reader.create_model("by-reader", "onnx")
    assert refused.value.status == 403 and "role 'admin'" in refused.value.detail
    assert client.revoke_token("client-reader")["active"] is False
    assert "client-reader" in [t["name"] for t in client.list_tokens()]


def test_a_duplicate_create_is_a_conflict(client: Client) -> None:
    client.create_model("twice", "onnx")
    with pytest.raises(Conflict) as caught:
        client.create_model("twice", "onnx")
    assert caught.value.status == 409 and "twice" in caught.value.detail


def test_bad_requests_are_invalid_with_the_reason(client: Client, tiny_onnx: TinyModel) -> None:
    with pytest.raises(InvalidRequest) as bad_name:
        client.create_model("no spaces allowed", "onnx")
    assert bad_name.value.status == 422 and "invalid model name" in bad_name.value.detail
    with pytest.raises(InvalidRequest) as bad_runtime:
        client.create_model("nope", "no-such-runtime")
    assert "no-such-runtime" in bad_runtime.value.detail

    client.create_model("shaped", "onnx")
    client.promote("shaped", client.upload("shaped", tiny_onnx.path, metadata=tiny_onnx.metadata())["version"])
    with pytest.raises(InvalidRequest) as bad_shape:
        client.predict("shaped", [[1.0, 2.0]])
    assert bad_shape.value.status == 422 and bad_shape.value.detail
    with pytest.raises(InvalidRequest) as bad_tensor:  # V2 answers {"error": ...}: the detail is that text
        client.infer("shaped", [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0]}])
    assert bad_tensor.value.status == 400 and bad_tensor.value.detail


def test_a_closed_port_is_connection_failed_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, token="unused") as client, pytest.raises(ConnectionFailed) as caught:
        client.list_models()
    assert caught.value.status is None and caught.value.reason == "unreachable"
    assert caught.value.url == url and url in str(caught.value)


@contextmanager
def keep_alive_server() -> Iterator[tuple[str, list[int]]]:
    """An HTTP/1.1 server that keeps connections open and answers ``[]``; yields its URL and the client
    ports of the connections it accepted, one per connection."""
    accepted: list[int] = []

    class Answer(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            accepted.append(self.client_address[1])

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", accepted
    finally:
        server.shutdown()
        server.server_close()


def test_the_client_lets_an_idle_connection_go_before_the_server_would() -> None:
    # uvicorn closes a connection idle for 5 s; a client that reuses one that old can send on it as it
    # closes, and read a reset from a server that is up. Back to back, one connection serves both calls.
    assert POOL_LIMITS.keepalive_expiry is not None and POOL_LIMITS.keepalive_expiry < 5.0
    with keep_alive_server() as (url, accepted), Client(url) as client:
        client.list_models()
        client.list_models()
        assert len(accepted) == 1
        time.sleep(POOL_LIMITS.keepalive_expiry + 0.3)
        client.list_models()
        assert len(accepted) == 2, "a connection idle past the pool's expiry was reused"


@pytest.mark.parametrize(("status", "kind"), [
    (400, InvalidRequest), (413, InvalidRequest), (422, InvalidRequest), (401, Unauthorized), (403, Forbidden),
    (404, NotFound), (409, Conflict), (500, ServerError), (504, ServerError), (405, ModelregError),
])
def test_each_status_has_its_error_type(status: int, kind: type[ModelregError]) -> None:
    error = error_for(httpx.Response(status, json={"detail": "what to fix"}))
    assert type(error) is kind and (error.status, error.detail) == (status, "what to fix")


def test_a_503_keeps_retry_after_and_a_body_without_detail_keeps_its_text() -> None:
    busy = error_for(httpx.Response(503, json={"detail": "overloaded"}, headers={"Retry-After": "5"}))
    assert isinstance(busy, Unavailable) and busy.retry_after == 5.0 and busy.detail == "overloaded"
    assert error_for(httpx.Response(502, text="Bad Gateway from the proxy")).detail == "Bad Gateway from the proxy"


def test_import_modelreg_loads_no_server_or_framework_code(tmp_path: Path) -> None:
    heavy = ["fastapi", "starlette", "sqlalchemy", "numpy", "torch", "onnxruntime", "redis", "modelreg.api"]
    probe = f"import sys, modelreg; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
    assert modelreg.Client is Client and modelreg.__version__
