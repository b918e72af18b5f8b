"""Artifact storage: content-addressed by sha256, streamed to disk, written atomically."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from modelreg.registry.errors import RegistryError, TooLarge, Unavailable

CHUNK = 1024 * 1024
TMP_PREFIX = "upload-"
# A temporary file nobody has written to for this long, and that no process holds, is an orphan.
ORPHAN_AFTER_SECONDS = 600.0

log = logging.getLogger("modelreg.artifacts")


@dataclass(frozen=True)
class StoredArtifact:
    sha256: str
    size_bytes: int
    path: Path
    head: bytes
    """The first bytes of the file, for format sniffing without reading it again."""


class ArtifactUnavailable(RegistryError):
    """This replica cannot get an artifact's bytes (missing, corrupt, or the store unreachable).

    The serving side turns it into the version's honest 503 ("cannot be loaded on this replica").
    """


class ArtifactMissing(ArtifactUnavailable):
    """The store has no object for the sha256 a version names."""


class ArtifactCorrupt(ArtifactUnavailable):
    """The store's bytes for a sha256 do not hash to it."""


class ArtifactStoreUnavailable(Unavailable, ArtifactUnavailable):
    """The object store cannot be reached or answers with a server error: an upload is a 503 with
    Retry-After (as for the database), a load is retried on the next poll."""

    what = "artifact store"

    def __init__(self, location: str, cause: str) -> None:
        self.cause = cause
        Exception.__init__(self, f"the artifact store {location} is unavailable ({cause}); loaded models keep "
                                 "serving, uploads and new loads wait until it is back: try again shortly")


class ArtifactStoreMisconfigured(RegistryError):
    """The artifact store's settings cannot work (no such bucket, wrong credentials): a start-up error
    that names the setting to fix."""


class ArtifactStore(Protocol):
    """Where artifact bytes live, content-addressed by sha256: a folder (``LocalArtifactStore``) or an
    S3-compatible bucket (``registry.s3_store.S3ArtifactStore``)."""

    location: str
    """Where the store is, for logs and messages (a folder, or ``s3://bucket/prefix``; never a secret)."""

    def put(self, stream: BinaryIO, max_bytes: int) -> StoredArtifact:
        """Store ``stream`` under its sha256 (streamed, hashed on the way); ``path`` is a local copy."""
        ...

    def fetch(self, sha256: str) -> Path:
        """A local file holding exactly these bytes; raises ArtifactUnavailable saying why not."""
        ...

    def exists(self, sha256: str) -> bool: ...

    def check(self) -> None:
        """At start: raise ArtifactStoreMisconfigured when the settings cannot work."""
        ...

    def sweep_orphans(self, older_than_seconds: float = ...) -> int:
        """Remove what uploads cut short left behind (never a stored artifact); how many went."""
        ...


class LocalArtifactStore:
    """Files under ``root/sha256/ab/<sha256>``; identical uploads share one file."""

    HEAD_BYTES = 4096

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def fetch(self, sha256: str) -> Path:
        """The file itself (the folder is the store: nothing to copy or verify)."""
        path = self.path(sha256)
        if not path.is_file():  # a replica with its own, stale artifact folder
            raise ArtifactMissing(f"its artifact (sha256 {sha256[:12]}…) is not in this replica's artifact store; "
                                  "give every replica the same store (MODELREG_ARTIFACT_DIR on a shared filesystem, "
                                  "or one S3 bucket in MODELREG_ARTIFACT_URL)")
        return path

    def check(self) -> None:
        """A folder works once it exists (made in ``__init__``)."""

    def put(self, stream: BinaryIO, max_bytes: int) -> StoredArtifact:
        """Copy ``stream`` to a temporary file while hashing, then rename it into place."""
        digest = hashlib.sha256()
        size = 0
        head = b""
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix=TMP_PREFIX)
        tmp = Path(tmp_name)
        # Held until the file is renamed or removed: the sweep of another replica sharing this
        # folder sees a live upload by its lock, whatever its age.
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(max_bytes)
                    if len(head) < self.HEAD_BYTES:
                        head += chunk[: self.HEAD_BYTES - len(head)]
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            final = self.path(sha)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                tmp.unlink()
            else:
                os.replace(tmp, final)
                os.chmod(final, 0o444)
            return StoredArtifact(sha256=sha, size_bytes=size, path=final, head=head)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def sweep_orphans(self, older_than_seconds: float = ORPHAN_AFTER_SECONDS) -> int:
        """Remove upload temp files left by a killed replica; how many were removed.

        A file is an orphan when no process holds its lock (every writer does, see ``put``) and
        nothing wrote to it for ``older_than_seconds``: both, so an upload running on another
        replica that shares the folder is never touched, even where locks do not cross hosts.
        """
        removed = 0
        now = time.time()
        for path in self._tmp.glob(TMP_PREFIX + "*"):
            try:
                if now - path.stat().st_mtime < older_than_seconds:
                    continue
                with open(path, "rb") as handle:
                    try:
                        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a live upload in another process
                    path.unlink()
            except FileNotFoundError:
                continue  # finished (renamed) or swept by another replica meanwhile
            removed += 1
        if removed:
            log.info("removed %d orphaned upload file(s) from %s", removed, self._tmp)
        return removed
