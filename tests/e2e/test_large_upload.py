"""A large artifact streams to disk: the server's memory does not grow with the upload's size."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import AUTH
from tests.e2e.conftest import StartReplicas

pytestmark = pytest.mark.slow
SIZE = 200 * 1024 * 1024


def _peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def test_a_200_mb_upload_is_stored_by_its_digest_without_sitting_in_memory(
        start_replicas: StartReplicas, postgres_url: str, redis_url: str, tmp_path: Path) -> None:
    (replica,) = start_replicas(1, database_url=postgres_url, redis_url=redis_url)
    assert replica.process is not None
    big = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with big.open("wb") as f:
        chunk = bytes(range(256)) * 4096  # 1 MiB
        for i in range(SIZE // len(chunk)):
            block = chunk[:-1] + bytes([i % 256])
            digest.update(block)
            f.write(block)
    with httpx.Client(base_url=replica.url, headers=AUTH, timeout=120) as client:
        assert client.post("/admin/models", json={"name": "big", "runtime": "echo"}).status_code == 201
        peak_before = _peak_rss_kib(replica.process.pid)
        with big.open("rb") as f:
            uploaded = client.post("/admin/models/big/versions", files={"artifact": ("big.bin", f)})
        peak_after = _peak_rss_kib(replica.process.pid)

    assert uploaded.status_code == 201, uploaded.text
    body = uploaded.json()
    # Not a format the echo runtime loads: stored, then refused with the reason (the runtime never
    # reads it, so what is measured is the upload path alone).
    assert body["status"] == "failed" and body["sha256"] == digest.hexdigest() and body["size_bytes"] == SIZE
    stored = tmp_path / "data" / "artifacts" / "sha256" / body["sha256"][:2] / body["sha256"]
    assert stored.stat().st_size == SIZE
    grown_mib = (peak_after - peak_before) / 1024
    assert grown_mib < 48, f"the server's peak memory grew {grown_mib:.0f} MiB for a {SIZE >> 20} MiB upload"
