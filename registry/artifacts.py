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

from modelreg.registry.errors import TooLarge

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


class ArtifactStore(Protocol):
    """Where artifact bytes live; an object store can implement this later."""

    def put(self, stream: BinaryIO, max_bytes: int) -> StoredArtifact: ...

    def path(self, sha256: str) -> Path: ...

    def exists(self, sha256: str) -> bool: ...


class LocalArtifactStore:
    """Files under ``root/sha256/ab/<sha256>``; identical uploads share one file."""

    HEAD_BYTES = 4096

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

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
