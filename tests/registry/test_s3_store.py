"""The S3 artifact store against a real S3-compatible server (SeaweedFS started for this module)."""

from __future__ import annotations

import hashlib
import io
import logging
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelreg.registry import LocalArtifactStore, TooLarge
from modelreg.registry.artifact_cache import ArtifactCache
from modelreg.registry.artifacts import (
    ArtifactCorrupt,
    ArtifactMissing,
    ArtifactStoreMisconfigured,
    ArtifactStoreUnavailable,
)
from modelreg.registry.opening import open_artifacts
from modelreg.registry.s3_store import MIN_PART_BYTES, S3ArtifactStore, S3Location, S3Settings
from tests.seaweedfs import SECRET_KEY, SeaweedFS, seaweedfs_server

MiB = 1024**2


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    yield from seaweedfs_server(tmp_path_factory.mktemp("seaweedfs"))


@pytest.fixture(scope="module")
def bucket(s3: SeaweedFS) -> str:
    return s3.new_bucket()  # one per module: each SeaweedFS bucket takes volumes of its own


@dataclass
class Place:
    """This test's ``s3://bucket/<prefix>``: stores on it, and what the bucket holds under it."""

    s3: SeaweedFS
    bucket: str
    prefix: str

    def store(self, cache: Path, *, secret: str = SECRET_KEY, create_bucket: bool = False) -> S3ArtifactStore:
        settings = S3Settings.from_environment({**self.s3.env(), "AWS_SECRET_ACCESS_KEY": secret})
        return S3ArtifactStore(S3Location.parse(f"s3://{self.bucket}/{self.prefix}"), settings.client(),
                               ArtifactCache(cache, 1024 * MiB), max_bytes=1024 * MiB, create_bucket=create_bucket,
                               part_bytes=MIN_PART_BYTES)

    def keys(self) -> list[str]:
        """The objects under the prefix, relative to it."""
        listed = self.s3.client().list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/").get("Contents", [])
        return sorted(o["Key"].removeprefix(f"{self.prefix}/") for o in listed)

    def pending_uploads(self) -> list[Any]:
        found = self.s3.client().list_multipart_uploads(Bucket=self.bucket, Prefix=f"{self.prefix}/")
        return list(found.get("Uploads", []))

    def overwrite(self, sha256: str, body: bytes) -> None:
        self.s3.client().put_object(Bucket=self.bucket, Key=f"{self.prefix}/sha256/{sha256}", Body=body)

    def delete(self, sha256: str) -> None:
        self.s3.client().delete_object(Bucket=self.bucket, Key=f"{self.prefix}/sha256/{sha256}")


@pytest.fixture
def place(s3: SeaweedFS, bucket: str) -> Place:
    return Place(s3, bucket, f"t-{uuid.uuid4().hex[:8]}/models")


class Generated(io.RawIOBase):
    """``size`` pseudo-random bytes made on demand (never whole in memory); raises after ``fail_after``."""

    def __init__(self, size: int, fail_after: int | None = None) -> None:
        self.size, self.sent, self.fail_after = size, 0, fail_after
        self.digest = hashlib.sha256()
        self._block = hashlib.sha256(uuid.uuid4().bytes).digest() * 32768  # 1 MiB, distinct per stream

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.fail_after is not None and self.sent >= self.fail_after:
            raise ConnectionResetError("the client hung up mid-upload")
        n = min(len(self._block) if n < 0 else n, len(self._block), self.size - self.sent)
        chunk = self._block[:n]
        self.sent += n
        self.digest.update(chunk)
        return chunk


def test_a_large_upload_streams_in_parts_to_its_content_address(place: Place, tmp_path: Path) -> None:
    store = place.store(tmp_path / "cache")
    stream = Generated(8 * MIN_PART_BYTES + 123)  # nine parts
    tracemalloc.start()
    try:
        stored = store.put(stream, max_bytes=1024 * MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stored.sha256 == stream.digest.hexdigest() and stored.size_bytes == stream.size
    assert place.keys() == [f"sha256/{stored.sha256}"]  # no upload key left behind
    assert place.pending_uploads() == []
    head = place.s3.client().head_object(Bucket=place.bucket, Key=f"{place.prefix}/sha256/{stored.sha256}")
    assert head["ContentLength"] == stream.size
    assert peak < 4 * MIN_PART_BYTES  # a few parts in flight at most, never the whole (9-part) artifact
    assert stored.path.read_bytes()[:64] == stored.head[:64]  # the validator's local copy
    assert hashlib.sha256(stored.path.read_bytes()).hexdigest() == stored.sha256


def test_a_small_upload_is_one_object_and_identical_uploads_share_it(place: Place,
                                                                     tmp_path: Path) -> None:
    store = place.store(tmp_path / "cache")
    first = store.put(io.BytesIO(b"model bytes"), max_bytes=1000)
    again = store.put(io.BytesIO(b"model bytes"), max_bytes=1000)
    assert first.sha256 == again.sha256 == hashlib.sha256(b"model bytes").hexdigest()
    assert place.keys() == [f"sha256/{first.sha256}"]


def test_another_replica_fetches_verifies_and_then_serves_from_its_cache(place: Place,
                                                                         tmp_path: Path) -> None:
    stored = place.store(tmp_path / "a").put(io.BytesIO(b"weights" * 1000), max_bytes=10**6)
    other = place.store(tmp_path / "b")
    path = other.fetch(stored.sha256)
    assert path.read_bytes() == b"weights" * 1000 and path.is_relative_to(tmp_path / "b")
    place.delete(stored.sha256)
    assert other.fetch(stored.sha256) == path  # the local copy: no second download


def test_a_missing_object_says_so_and_how_to_restore_it(place: Place, tmp_path: Path) -> None:
    store = place.store(tmp_path / "cache")
    absent = hashlib.sha256(b"never uploaded").hexdigest()
    with pytest.raises(ArtifactMissing, match=f"sha256 {absent[:12]}…\\) is missing from the artifact store, S3 "
                                              f"bucket '{place.bucket}' \\(prefix '{place.prefix}/'\\); upload the "
                                              "same model file again"):
        store.fetch(absent)
    assert not store.exists(absent)


def test_a_corrupt_object_is_refused_and_not_cached(place: Place, tmp_path: Path) -> None:
    stored = place.store(tmp_path / "a").put(io.BytesIO(b"the real model"), max_bytes=1000)
    place.overwrite(stored.sha256, b"bit rot")
    other = place.store(tmp_path / "b")
    with pytest.raises(ArtifactCorrupt, match="is corrupt: its bytes hash to sha256"):
        other.fetch(stored.sha256)
    assert other.cache.size_bytes() == 0 and not list((tmp_path / "b" / "tmp").iterdir())
    # Uploading the same file again (from anywhere) repairs the object for every version naming it.
    place.store(tmp_path / "c").put(io.BytesIO(b"the real model"), max_bytes=1000)
    assert other.fetch(stored.sha256).read_bytes() == b"the real model"


def test_an_interrupted_upload_leaves_no_object_and_no_pending_upload(place: Place,
                                                                      tmp_path: Path) -> None:
    store = place.store(tmp_path / "cache")
    with pytest.raises(ConnectionResetError):
        store.put(Generated(3 * MIN_PART_BYTES, fail_after=MIN_PART_BYTES + MiB), max_bytes=1024 * MiB)
    assert place.keys() == [] and place.pending_uploads() == []  # parts were sent, then aborted
    assert not list((tmp_path / "cache" / "tmp").iterdir()) and store.cache.size_bytes() == 0


def test_an_upload_over_the_limit_is_aborted_mid_stream(place: Place, tmp_path: Path) -> None:
    store = place.store(tmp_path / "cache")
    with pytest.raises(TooLarge, match="MODELREG_MAX_ARTIFACT_BYTES"):
        store.put(Generated(2 * MIN_PART_BYTES), max_bytes=MIN_PART_BYTES + MiB)
    assert place.keys() == [] and place.pending_uploads() == []


def test_the_sweep_removes_stale_uploads_and_never_an_artifact(place: Place, tmp_path: Path) -> None:
    store = place.store(tmp_path / "cache")
    kept = store.put(io.BytesIO(b"an artifact"), max_bytes=1000)
    client = place.s3.client()
    client.create_multipart_upload(Bucket=place.bucket, Key=f"{store.uploads_prefix}killed-mid-upload")
    client.put_object(Bucket=place.bucket, Key=f"{store.uploads_prefix}killed-before-copy", Body=b"x")
    assert store.sweep_orphans() == 0  # younger than the grace period: maybe a live upload elsewhere
    assert store.sweep_orphans(older_than_seconds=0) == 2
    assert place.keys() == [f"sha256/{kept.sha256}"] and place.pending_uploads() == []


def test_a_missing_bucket_stops_the_start_naming_the_fix(s3: SeaweedFS, tmp_path: Path) -> None:
    name = f"modelreg-absent-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ArtifactStoreMisconfigured, match=f"bucket '{name}' .* does not exist .*"
                                                         "MODELREG_ARTIFACT_CREATE_BUCKET=true"):
        Place(s3, name, "models").store(tmp_path / "cache").check()
    Place(s3, name, "models").store(tmp_path / "cache", create_bucket=True).check()  # told to: it makes the bucket
    assert s3.client().head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_wrong_credentials_stop_the_start_without_showing_them(place: Place, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    wrong = "not-the-secret-" + uuid.uuid4().hex
    caplog.set_level(logging.DEBUG, logger="modelreg")
    with pytest.raises(ArtifactStoreMisconfigured, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") as info:
        place.store(tmp_path / "cache", secret=wrong).check()
    assert wrong not in str(info.value) and wrong not in caplog.text and SECRET_KEY not in caplog.text


def test_an_unreachable_store_starts_then_answers_unavailable(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    store = open_artifacts("s3://nowhere/models", cache_dir=tmp_path / "cache", cache_bytes=MiB, environ=env)
    assert "does not answer" in caplog.text  # started anyway: cached artifacts still load
    with pytest.raises(ArtifactStoreUnavailable,
                       match="the artifact store S3 bucket 'nowhere' \\(prefix 'models/'\\) is unavailable"):
        store.fetch(hashlib.sha256(b"x").hexdigest())
    with pytest.raises(ArtifactStoreUnavailable):
        store.put(io.BytesIO(b"x"), max_bytes=10)


def test_the_artifact_url_chooses_the_store(s3: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    cache = {"cache_dir": tmp_path / "cache", "cache_bytes": MiB}
    assert isinstance(open_artifacts(str(tmp_path / "a"), **cache), LocalArtifactStore)  # type: ignore[arg-type]
    local = open_artifacts(f"file://{tmp_path / 'b'}", **cache)  # type: ignore[arg-type]
    assert isinstance(local, LocalArtifactStore) and local.root == tmp_path / "b"
    remote = open_artifacts(f"s3://{bucket}/team/models", environ=s3.env(), **cache)  # type: ignore[arg-type]
    assert isinstance(remote, S3ArtifactStore) and remote.location == f"s3://{bucket}/team/models/"
    with pytest.raises(ArtifactStoreMisconfigured, match="is not a folder, file:///path or s3://bucket/prefix"):
        open_artifacts("gs://bucket/models", **cache)  # type: ignore[arg-type]
