"""A replica's bounded local copy of artifacts fetched from an object store: LRU by bytes.

Files live under ``root/sha256/<sha256>`` and are renamed into place only once their bytes hashed
to that name, so whatever is in the cache is verified. The least recently used files go first
when the total passes ``max_bytes``. Recency is each file's mtime (touched on every use) and the
total is read from the folder, not kept in memory, so several worker processes sharing one cache
folder agree on both. Evicting a file a model was loaded from is harmless: a loaded model holds its
bytes in memory (and on Linux an open file outlives its name), so the next load fetches it again.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from pathlib import Path

TMP_PREFIX = "fetch-"
# A partial download nobody wrote to for this long was left by a killed process.
STALE_TEMP_SECONDS = 600.0

log = logging.getLogger("modelreg.artifacts")


class ArtifactCache:
    """At most ``max_bytes`` of verified artifact files under ``root`` (one file over it is kept alone)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._files = root / "sha256"
        self._tmp = root / "tmp"
        self._files.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._evicting = threading.Lock()

    def path(self, sha256: str) -> Path:
        return self._files / sha256

    def get(self, sha256: str) -> Path | None:
        """The cached file, marked as just used; None when it is not here."""
        path = self.path(sha256)
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        return path

    def new_temp(self) -> tuple[int, Path]:
        """An open descriptor and path for bytes on their way into the cache."""
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix=TMP_PREFIX)
        return fd, Path(name)

    def adopt(self, temp: Path, sha256: str) -> Path:
        """Move a verified temporary file into place as ``sha256`` and evict down to the budget."""
        final = self.path(sha256)
        os.chmod(temp, 0o444)
        os.replace(temp, final)  # atomic: a reader sees the whole file or none
        self.evict(keep=sha256)
        return final

    def size_bytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def evict(self, keep: str | None = None) -> int:
        """Remove least recently used files until the total fits ``max_bytes``; how many went."""
        with self._evicting:
            entries = sorted(self._entries(), key=lambda e: e[2])  # oldest use first
            total = sum(size for _, size, _ in entries)
            removed = 0
            for path, size, _ in entries:
                if total <= self.max_bytes:
                    break
                if path.name == keep:
                    continue  # the file a caller is about to load stays, even alone over budget
                path.unlink(missing_ok=True)
                total -= size
                removed += 1
            if removed:
                log.info("artifact cache %s: evicted %d file(s), %d bytes kept (budget %d)",
                         self.root, removed, total, self.max_bytes)
            return removed

    def sweep_temps(self, older_than_seconds: float = STALE_TEMP_SECONDS) -> int:
        """Remove partial downloads and uploads a killed process left; how many were removed."""
        removed, now = 0, time.time()
        for path in self._tmp.glob(TMP_PREFIX + "*"):
            try:
                if now - path.stat().st_mtime >= older_than_seconds:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def _entries(self) -> list[tuple[Path, int, float]]:
        found = []
        for path in self._files.iterdir():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # evicted by another process meanwhile
            found.append((path, stat.st_size, stat.st_mtime))
        return found
