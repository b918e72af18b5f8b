"""`modelreg serve` keeps an idle client connection for MODELREG_KEEP_ALIVE_SECONDS, then closes it."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import Replica, StartReplicas

pytestmark = pytest.mark.slow


def seconds_until_closed(replica: Replica, wait: float) -> float | None:
    """Answer one keep-alive request on a raw connection, then how long the server took to close it
    (None if it was still open after ``wait`` seconds)."""
    address = urlsplit(replica.url)
    with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: modelreg\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            answer += sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        answered = time.monotonic()
        sock.settimeout(wait)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            return None
        assert closed, "the server sent more than its answer"
        return time.monotonic() - answered


def test_an_idle_connection_stays_open_for_the_configured_keep_alive(
        start_replicas: StartReplicas, tmp_path: Path) -> None:
    (default, longer) = (
        start_replicas(1, database_url=f"sqlite:///{tmp_path / name}.db", redis_url=None, cli=True, **env)[0]
        for name, env in (("default", {}), ("longer", {"MODELREG_KEEP_ALIVE_SECONDS": "8"})))
    # uvicorn's 5 s by default: closed then, not before (the Client lets its idle connections go at 2 s).
    after = seconds_until_closed(default, wait=10)
    assert after is not None and 4.5 < after < 7, after
    # Behind a load balancer with a longer idle timeout, the server keeps its side open longer still.
    assert seconds_until_closed(longer, wait=6.5) is None
