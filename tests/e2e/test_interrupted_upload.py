"""An upload whose client goes away half way leaves nothing behind, and the server goes on."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import AUTH, TOKEN, echo_artifact
from tests.e2e.conftest import StartReplicas, create_echo_model

pytestmark = pytest.mark.slow
BOUNDARY = "modelreg-test-boundary"


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


def _send_half_an_upload_and_hang_up(port: int, model: str, size: int) -> None:
    """A multipart upload announcing ``size`` bytes of which the client sends half, then closes."""
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="artifact"; filename="big.json"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    artifact = b'{"offset": 1.0, "pad": "' + b"x" * (size - len(head) - len(tail) - 28) + b'"}'
    body = head + artifact + tail
    request = (f"POST /admin/models/{model}/versions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Authorization: Bearer {TOKEN}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request + body[: len(body) // 2])
        time.sleep(0.3)  # the server is reading the body by now


def test_an_upload_cut_half_way_leaves_no_version_no_file_and_the_server_serving(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str, tmp_path: Path) -> None:
    (replica,) = start_replicas(1, database_url=postgres_url, redis_url=redis_url)
    create_echo_model(replica.url, "m", [1.0])
    artifacts = tmp_path / "data" / "artifacts"
    before = _files(artifacts)
    assert replica.process is not None
    fds = Path(f"/proc/{replica.process.pid}/fd")
    fds_before = len(list(fds.iterdir()))

    for _ in range(3):  # in memory (under starlette's 1 MB spool) and on disk
        _send_half_an_upload_and_hang_up(replica.port, "m", 2 * 1024 * 1024)
    _send_half_an_upload_and_hang_up(replica.port, "m", 256 * 1024)
    time.sleep(0.5)

    with httpx.Client(base_url=replica.url, headers=AUTH, timeout=10) as client:
        assert [v["version"] for v in client.get("/admin/models/m/versions").json()] == [1]
        assert _files(artifacts) == before, "a partial upload left a file behind"
        assert len(list(fds.iterdir())) <= fds_before + 2, "spool files of the cut uploads are still open"
        assert client.post("/admin/models/m/promote", json={"version": 1}).status_code == 200
        assert client.post("/models/m/predict", json={"inputs": [[1.0]]}).json()["outputs"] == [[2.0]]
        uploaded = client.post("/admin/models/m/versions", files={"artifact": ("m.json", echo_artifact(2.0))})
        assert uploaded.status_code == 201 and uploaded.json()["version"] == 2, uploaded.text
    assert "Traceback" not in replica.log.read_text()
