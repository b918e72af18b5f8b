"""Replicas that share PostgreSQL, Redis and an S3 bucket (a real SeaweedFS) but no artifact folder:
an upload on one serves from another, a missing or corrupt object is an honest 503 on a replica
that has yet to load it, and neither that nor the store going down stops what is already loaded."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import AUTH, echo_artifact
from tests.e2e.conftest import Replica, StartReplicas, until
from tests.seaweedfs import SeaweedFS, seaweedfs_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    yield from seaweedfs_server(tmp_path_factory.mktemp("seaweedfs"))


@pytest.fixture
def fleet(start_replicas: StartReplicas, postgres_url: str, redis_url: str,
          tmp_path: Path) -> Iterator[StartFleet]:
    yield StartFleet(start_replicas, postgres_url, redis_url, tmp_path)


class StartFleet:
    """Starts replicas on one database, Redis and bucket, each with a data folder (and cache) of its own."""

    def __init__(self, start: StartReplicas, database_url: str, redis_url: str, tmp_path: Path) -> None:
        self.start, self.database_url, self.redis_url, self.tmp_path = start, database_url, redis_url, tmp_path
        self.cache_prefix = f"modelreg-test-{uuid.uuid4().hex[:8]}"

    def replica(self, s3: SeaweedFS, artifact_url: str) -> Replica:
        data = self.tmp_path / f"data-{uuid.uuid4().hex[:6]}"
        (replica,) = self.start(1, database_url=self.database_url, redis_url=self.redis_url,
                                MODELREG_CACHE_PREFIX=self.cache_prefix, MODELREG_DATA_DIR=str(data),
                                MODELREG_ARTIFACT_URL=artifact_url, **s3.env())
        replica.data = data  # type: ignore[attr-defined]
        return replica


def upload(url: str, name: str, offsets: list[float]) -> None:
    """Create an echo model with one version per offset, and promote version 1."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as admin:
        assert admin.post("/admin/models", json={"name": name, "runtime": "echo"}).status_code == 201
        for offset in offsets:
            sent = admin.post(f"/admin/models/{name}/versions", files={"artifact": ("m.json", echo_artifact(offset))})
            assert sent.status_code == 201 and sent.json()["status"] == "ready", sent.text
        assert admin.post(f"/admin/models/{name}/promote", json={"version": 1}).status_code == 200


def predict(replica: Replica, name: str, path: str = "predict") -> httpx.Response:
    return httpx.post(f"{replica.url}/models/{name}/{path}", json={"inputs": [[1.0]]}, timeout=15)


def serves(replica: Replica, name: str, answer: float, x: float = 1.0) -> bool:
    """The replica answers ``answer`` for the input ``x`` (the echo model adds its offset)."""
    response = httpx.post(f"{replica.url}/models/{name}/predict", json={"inputs": [[x]]}, timeout=15)
    return response.status_code == 200 and response.json()["outputs"] == [[answer]]


def sha_of(replica: Replica, name: str, version: int) -> str:
    found = httpx.get(f"{replica.url}/admin/models/{name}/versions/{version}", headers=AUTH, timeout=10)
    return str(found.json()["sha256"])


def test_an_upload_on_one_replica_serves_from_another_and_a_bad_object_is_an_honest_503(
        s3: SeaweedFS, fleet: StartFleet) -> None:
    bucket = s3.new_bucket()
    url = f"s3://{bucket}/models"
    first, second = fleet.replica(s3, url), fleet.replica(s3, url)
    upload(first.url, "shared", [1.0])
    answer = until(lambda: (r := predict(second, "shared")).status_code == 200 and r, "the second replica serves")
    assert answer.json()["outputs"] == [[2.0]] and answer.headers["X-Model-Version"] == "1"
    sha = sha_of(first, "shared", 1)
    # The bytes came through the bucket into the second replica's own cache; no folder is shared.
    assert (second.data / "artifact-cache" / "sha256" / sha).is_file()  # type: ignore[attr-defined]
    assert not list((second.data / "artifacts").glob("sha256/*/*"))  # type: ignore[attr-defined]
    assert not list((first.data / "artifacts").glob("sha256/*/*"))  # type: ignore[attr-defined]

    # Two more models, loaded on the first replica only (asked for by number, never promoted);
    # then one object is corrupted and the other deleted.
    for name, offset in (("rotten", 10.0), ("gone", 20.0)):
        with httpx.Client(base_url=first.url, headers=AUTH, timeout=30) as admin:
            assert admin.post("/admin/models", json={"name": name, "runtime": "echo"}).status_code == 201
            sent = admin.post(f"/admin/models/{name}/versions", files={"artifact": ("m.json", echo_artifact(offset))})
            assert sent.json()["status"] == "ready", sent.text
        assert predict(first, name, "versions/1/predict").json()["outputs"] == [[offset + 1]]
    client = s3.client()
    client.put_object(Bucket=bucket, Key=f"models/sha256/{sha_of(first, 'rotten', 1)}", Body=b'{"offset": 99}')
    client.delete_object(Bucket=bucket, Key=f"models/sha256/{sha_of(first, 'gone', 1)}")

    # The second replica has to fetch them, and cannot: a 503 saying why, never the wrong bytes.
    corrupt, missing = predict(second, "rotten", "versions/1/predict"), predict(second, "gone", "versions/1/predict")
    assert corrupt.status_code == 503 and missing.status_code == 503
    assert corrupt.headers["Retry-After"] and missing.headers["Retry-After"]
    assert corrupt.json()["detail"].startswith("rotten v1 cannot be loaded on this replica: ")
    assert "is corrupt: its bytes hash to sha256" in corrupt.json()["detail"]
    assert f"is missing from the artifact store, S3 bucket '{bucket}' (prefix 'models/')" in missing.json()["detail"]
    # The replica that loaded them keeps serving: a loaded model holds its bytes in memory.
    assert predict(first, "rotten", "versions/1/predict").json()["outputs"] == [[11.0]]
    assert predict(first, "gone", "versions/1/predict").json()["outputs"] == [[21.0]]
    assert serves(second, "shared", 2.0)

    # Uploading the same file again repairs the object; the second replica's next try loads it.
    with httpx.Client(base_url=first.url, headers=AUTH, timeout=30) as admin:
        assert admin.post("/admin/models/gone/versions",
                          files={"artifact": ("m.json", echo_artifact(20.0))}).status_code == 201
    until(lambda: predict(second, "gone", "versions/1/predict").status_code == 200,
          "the second replica loads the repaired artifact", timeout=15)


def test_loaded_versions_keep_serving_while_the_store_is_down(fleet: StartFleet, tmp_path: Path) -> None:
    own = seaweedfs_server(tmp_path / "own-seaweedfs")  # this test stops it: a server of its own
    (tmp_path / "own-seaweedfs").mkdir()
    s3 = next(own)
    try:
        url = f"s3://{s3.new_bucket()}/models"
        replica = fleet.replica(s3, url)
        upload(replica.url, "steady", [1.0, 5.0])
        assert serves(replica, "steady", 2.0)
        # Version 2 was never loaded here, and its cached copy is gone (as the cache's eviction does).
        cache = replica.data / "artifact-cache" / "sha256"  # type: ignore[attr-defined]
        (cache / sha_of(replica, "steady", 2)).unlink()
        s3.stop()

        for x in range(20):  # new inputs: the model computes, not only the cache answering
            assert serves(replica, "steady", x + 1.0, x)
        # What needs the store says so: the version it would have to fetch, and a new upload.
        unloaded = predict(replica, "steady", "versions/2/predict")
        assert unloaded.status_code == 503 and unloaded.headers["Retry-After"]
        assert "the artifact store S3 bucket" in unloaded.json()["detail"]
        with httpx.Client(base_url=replica.url, headers=AUTH, timeout=30) as admin:
            refused = admin.post("/admin/models/steady/versions", files={"artifact": ("m.json", echo_artifact(9.0))})
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        assert "the artifact store S3 bucket" in refused.json()["detail"] and "is unavailable" in refused.text
        assert serves(replica, "steady", 2.0)
    finally:
        own.close()
