"""Artifacts in an S3-compatible bucket (AWS S3, MinIO, SeaweedFS, GCS in S3 mode), content-addressed by sha256.

``s3://bucket/prefix`` holds ``prefix/sha256/<sha256>`` (the artifacts) and ``prefix/uploads/<id>``
(multipart uploads on their way, before their sha256 is known). An upload streams: it is hashed
and sent part by part (one part in memory at a time) to an upload key, then copied to its content
address (server-side) and the upload key deleted; any failure aborts the multipart upload, so a cut
upload leaves no object. A small upload (one part) is sent straight to its content address once hashed.
Each byte also goes to this replica's ``ArtifactCache``, where the validator (and later loads)
read it. Loads fetch into that cache and verify the sha256 of what came back.

Credentials and endpoint come from the standard ``AWS_*`` variables (``S3Settings``); neither the
access key nor the secret is ever logged or put in a message. boto3 is imported only here, and
this module only when the artifact URL is ``s3://`` (``registry.opening.open_artifacts``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlparse

from modelreg.registry.artifact_cache import ArtifactCache
from modelreg.registry.artifacts import (
    CHUNK,
    ORPHAN_AFTER_SECONDS,
    ArtifactCorrupt,
    ArtifactMissing,
    ArtifactStoreMisconfigured,
    ArtifactStoreUnavailable,
    StoredArtifact,
)
from modelreg.registry.errors import TooLarge

log = logging.getLogger("modelreg.artifacts")

PART_BYTES = 8 * 1024**2  # one part in memory at a time
MIN_PART_BYTES = 5 * 1024**2  # S3 wants at least this for every part but the last
MAX_PARTS = 9_000  # S3 allows 10,000; a margin so the part size is decided once, up front
SINGLE_COPY_LIMIT = 5 * 1024**3  # CopyObject's limit; larger objects are copied in parts
HEAD_BYTES = 4096
_MISSING = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
           "ExpiredToken", "AllAccessDisabled"}


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str
    """Empty, or ending in ``/``."""

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parts = urlparse(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ArtifactStoreMisconfigured(f"MODELREG_ARTIFACT_URL {url!r} is not s3://bucket/prefix")
        prefix = parts.path.strip("/")
        return cls(bucket=parts.netloc, prefix=f"{prefix}/" if prefix else "")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class S3Settings:
    """The standard AWS settings; unset credentials fall back to boto3's own chain (profiles, roles)."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> S3Settings:
        def get(*names: str) -> str | None:
            return next((environ[n] for n in names if environ.get(n)), None)

        return cls(endpoint_url=get("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
                   region=get("AWS_REGION", "AWS_DEFAULT_REGION"),
                   access_key_id=get("AWS_ACCESS_KEY_ID"), secret_access_key=get("AWS_SECRET_ACCESS_KEY"),
                   session_token=get("AWS_SESSION_TOKEN"))

    def client(self) -> Any:
        """A boto3 S3 client that gives up on a dead endpoint in seconds, not minutes."""
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise ArtifactStoreMisconfigured("MODELREG_ARTIFACT_URL is s3://… but boto3 is not installed: "
                                             "pip install 'modelreg[s3]'") from exc
        # Path-style addressing for endpoints of our own (MinIO, SeaweedFS): they rarely have
        # wildcard DNS for virtual-hosted buckets. AWS itself takes either.
        config = Config(connect_timeout=3, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"},
                        s3={"addressing_style": "path" if self.endpoint_url else "auto"})
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region or "us-east-1",
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token, config=config)


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
    return None


def _describe(exc: BaseException) -> str:
    """A short, secret-free cause: the S3 error code, or the kind of connection failure."""
    code = _error_code(exc)
    return f"S3 error {code}" if code else type(exc).__name__


def _is_store_error(exc: BaseException) -> bool:
    """botocore's own errors (the client or the wire); anything else is ours and propagates as is."""
    return type(exc).__module__.startswith(("botocore", "urllib3", "s3transfer"))


class S3ArtifactStore:
    """Artifacts in ``s3://bucket/prefix`` with a bounded, verified local copy on this replica."""

    def __init__(self, where: S3Location, client: Any, cache: ArtifactCache, *, max_bytes: int,
                 create_bucket: bool = False, part_bytes: int = PART_BYTES) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"part_bytes must be at least {MIN_PART_BYTES} (S3's smallest part)")
        self.part_bytes = part_bytes
        self.where = where
        self.location = str(where)
        # In answers to clients: the serving side strips anything shaped like a server path from load
        # failures, and an s3:// URL is shaped like one.
        prefix = f" (prefix {where.prefix!r})" if where.prefix else ""
        self.named = f"S3 bucket {where.bucket!r}{prefix}"
        self._s3 = client
        self.cache = cache
        self.max_bytes = max_bytes
        self._create_bucket = create_bucket
        self._fetching: dict[str, threading.Lock] = {}
        self._fetching_guard = threading.Lock()

    def key(self, sha256: str) -> str:
        return f"{self.where.prefix}sha256/{sha256}"

    @property
    def uploads_prefix(self) -> str:
        return f"{self.where.prefix}uploads/"

    # start-up ------------------------------------------------------------------------------

    def check(self) -> None:
        """Refuse to start on a bucket that is not there (or create it) or credentials that do not work.

        An endpoint that does not answer is not refused: artifacts already in the local cache still
        load, and everything else answers 503 until the store is back.
        """
        bucket = self.where.bucket
        try:
            self._s3.head_bucket(Bucket=bucket)
        except Exception as exc:
            if not _is_store_error(exc):
                raise
            code = _error_code(exc)
            if code in _MISSING and self._create_bucket:
                self._make_bucket()
                return
            if code in _MISSING:
                raise ArtifactStoreMisconfigured(
                    f"the bucket {bucket!r} of MODELREG_ARTIFACT_URL={self.location} does not exist at "
                    f"{self._endpoint()}: create it, fix the bucket name or AWS_ENDPOINT_URL, or set "
                    "MODELREG_ARTIFACT_CREATE_BUCKET=true to have it created") from None
            if code in _DENIED:
                raise ArtifactStoreMisconfigured(
                    f"the artifact store {self.location} at {self._endpoint()} refused these credentials "
                    f"({code}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and that they may read, "
                    "write and list that bucket") from None
            if code in {"301", "PermanentRedirect", "AuthorizationHeaderMalformed"}:
                raise ArtifactStoreMisconfigured(
                    f"the bucket {bucket!r} is in another region ({code}): set AWS_REGION to its region") from None
            if type(exc).__name__ == "NoCredentialsError":
                raise ArtifactStoreMisconfigured(
                    f"no credentials for the artifact store {self.location}: set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY (or an AWS profile or role)") from None
            log.warning("the artifact store %s at %s does not answer (%s); starting anyway: cached artifacts "
                        "load, other loads and uploads answer 503 until it is back",
                        self.location, self._endpoint(), _describe(exc))

    def _make_bucket(self) -> None:
        region = self._s3.meta.region_name
        options: dict[str, Any] = {"Bucket": self.where.bucket}
        if self._s3.meta.endpoint_url is None and region and region != "us-east-1":  # AWS wants it said
            options["CreateBucketConfiguration"] = {"LocationConstraint": region}
        self._s3.create_bucket(**options)
        log.info("created the bucket %r (MODELREG_ARTIFACT_CREATE_BUCKET)", self.where.bucket)

    def _endpoint(self) -> str:
        return str(self._s3.meta.endpoint_url or "AWS S3")

    # upload --------------------------------------------------------------------------------

    def put(self, stream: BinaryIO, max_bytes: int) -> StoredArtifact:
        """Stream ``stream`` to the bucket in parts while hashing it and keeping a local copy."""
        part_size = max(self.part_bytes, math.ceil(max_bytes / MAX_PARTS))
        digest, size, head = hashlib.sha256(), 0, b""
        buffer = bytearray()
        upload_key = f"{self.uploads_prefix}{uuid.uuid4().hex}"
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        fd, local = self.cache.new_temp()
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(max_bytes)
                    if len(head) < HEAD_BYTES:
                        head += chunk[: HEAD_BYTES - len(head)]
                    digest.update(chunk)
                    out.write(chunk)
                    buffer += chunk
                    if len(buffer) >= part_size:
                        if upload_id is None:
                            upload_id = self._call("create_multipart_upload", Bucket=self.where.bucket,
                                                   Key=upload_key)["UploadId"]
                        part = bytes(memoryview(buffer)[:part_size])  # one copy, no slice in between
                        parts.append(self._part(upload_key, upload_id, len(parts) + 1, part))
                        del buffer[:part_size]
            sha = digest.hexdigest()
            final = self.key(sha)
            # Written even when the address already holds an object: the bytes were sent anyway and are
            # verified by our own hash, so uploading a file again repairs a corrupt or deleted copy.
            if upload_id is None:  # it fitted in one part: hashed already, so straight to its address
                self._call("put_object", Bucket=self.where.bucket, Key=final, Body=bytes(buffer))
            else:
                if buffer:
                    parts.append(self._part(upload_key, upload_id, len(parts) + 1, bytes(buffer)))
                buffer = bytearray()
                self._call("complete_multipart_upload", Bucket=self.where.bucket, Key=upload_key,
                           UploadId=upload_id, MultipartUpload={"Parts": parts})
                upload_id = None  # completed: from here the upload key is an object, deleted below
                try:
                    self._copy(upload_key, final, size)  # server-side
                finally:
                    self._delete_quietly(upload_key)
            path = self.cache.adopt(local, sha)
            log.info("stored artifact sha256 %s… (%d bytes) in %s", sha[:12], size, self.location)
            return StoredArtifact(sha256=sha, size_bytes=size, path=path, head=head)
        except BaseException:
            if upload_id is not None:
                self._abort_quietly(upload_key, upload_id)
            local.unlink(missing_ok=True)
            raise

    def _part(self, key: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        answer = self._call("upload_part", Bucket=self.where.bucket, Key=key, UploadId=upload_id,
                            PartNumber=number, Body=body)
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _copy(self, source: str, target: str, size: int) -> None:
        copy_source = {"Bucket": self.where.bucket, "Key": source}
        if size <= SINGLE_COPY_LIMIT:
            self._call("copy_object", Bucket=self.where.bucket, Key=target, CopySource=copy_source)
        else:  # boto3's managed copy does it in parts
            self._call("copy", CopySource=copy_source, Bucket=self.where.bucket, Key=target)

    def _abort_quietly(self, key: str, upload_id: str) -> None:
        try:
            self._s3.abort_multipart_upload(Bucket=self.where.bucket, Key=key, UploadId=upload_id)
        except Exception as exc:  # the store is down too: the sweep aborts it later
            log.warning("could not abort the multipart upload %s in %s (%s); the orphan sweep will",
                        key, self.location, _describe(exc))

    def _delete_quietly(self, key: str) -> None:
        try:
            self._s3.delete_object(Bucket=self.where.bucket, Key=key)
        except Exception as exc:
            log.warning("could not delete the upload object %s in %s (%s); the orphan sweep will",
                        key, self.location, _describe(exc))

    # read ----------------------------------------------------------------------------------

    def exists(self, sha256: str) -> bool:
        return self.cache.get(sha256) is not None or self._has(self.key(sha256))

    def fetch(self, sha256: str) -> Path:
        """The locally cached file, fetched and verified first when it is not there yet."""
        cached = self.cache.get(sha256)
        if cached is not None:
            return cached
        with self._fetch_lock(sha256):  # one download per artifact, however many loads ask at once
            cached = self.cache.get(sha256)
            if cached is not None:
                return cached
            return self._download(sha256)

    def _fetch_lock(self, sha256: str) -> threading.Lock:
        with self._fetching_guard:
            return self._fetching.setdefault(sha256, threading.Lock())

    def _download(self, sha256: str) -> Path:
        short = sha256[:12]
        try:
            answer = self._s3.get_object(Bucket=self.where.bucket, Key=self.key(sha256))
        except Exception as exc:
            if not _is_store_error(exc):
                raise
            if _error_code(exc) in _MISSING:
                raise ArtifactMissing(f"its artifact (sha256 {short}…) is missing from the artifact store, "
                                      f"{self.named}; upload the same model file again to restore it") from None
            raise ArtifactStoreUnavailable(self.named, _describe(exc)) from None
        fd, temp = self.cache.new_temp()
        digest, size = hashlib.sha256(), 0
        try:
            body = answer["Body"]
            with os.fdopen(fd, "wb") as out:
                try:
                    while chunk := body.read(CHUNK):
                        size += len(chunk)
                        if size > self.max_bytes:
                            break  # not what was stored: its hash will not match either
                        digest.update(chunk)
                        out.write(chunk)
                except Exception as exc:
                    if not _is_store_error(exc):
                        raise
                    raise ArtifactStoreUnavailable(self.named, f"{_describe(exc)} mid-download") from None
                finally:
                    body.close()
            got = digest.hexdigest()
            if got != sha256:
                raise ArtifactCorrupt(f"its artifact in {self.named} is corrupt: its bytes hash to sha256 "
                                      f"{got[:12]}…, not {short}…; upload the same model file again to restore it")
            path = self.cache.adopt(temp, sha256)
            log.info("fetched artifact sha256 %s… (%d bytes) from %s", short, size, self.location)
            return path
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def _has(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.where.bucket, Key=key)
            return True
        except Exception as exc:
            if _is_store_error(exc) and _error_code(exc) in _MISSING:
                return False
            if _is_store_error(exc):
                raise ArtifactStoreUnavailable(self.named, _describe(exc)) from None
            raise

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        """One S3 call; the store's own failures become ArtifactStoreUnavailable (a 503 with Retry-After)."""
        try:
            return cast(dict[str, Any], getattr(self._s3, method)(**kwargs) or {})
        except Exception as exc:
            if _is_store_error(exc):
                raise ArtifactStoreUnavailable(self.named, _describe(exc)) from None
            raise

    # housekeeping --------------------------------------------------------------------------

    def sweep_orphans(self, older_than_seconds: float = ORPHAN_AFTER_SECONDS) -> int:
        """Remove what cut-short uploads left: multipart uploads and upload objects under ``uploads/``
        older than ``older_than_seconds`` (a live upload on another replica is younger), and stale
        partial files in the local cache. Artifacts under ``sha256/`` are never touched here."""
        cutoff = time.time() - older_than_seconds
        bucket, removed = self.where.bucket, self.cache.sweep_temps(older_than_seconds)
        paginate = self._s3.get_paginator
        try:
            for page in paginate("list_multipart_uploads").paginate(Bucket=bucket, Prefix=self.uploads_prefix):
                for upload in page.get("Uploads", []):
                    if _timestamp(upload["Initiated"]) < cutoff:
                        self._abort_quietly(upload["Key"], upload["UploadId"])
                        removed += 1
            for page in paginate("list_objects_v2").paginate(Bucket=bucket, Prefix=self.uploads_prefix):
                for item in page.get("Contents", []):
                    if _timestamp(item["LastModified"]) < cutoff:
                        self._delete_quietly(item["Key"])
                        removed += 1
        except Exception as exc:
            if _is_store_error(exc):
                raise ArtifactStoreUnavailable(self.named, _describe(exc)) from None
            raise
        if removed:
            log.info("removed %d orphaned upload(s) from %s", removed, self.location)
        return removed


def _timestamp(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
