"""A replica's local artifact cache: bounded by bytes, least recently used out, shared safely by processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

from modelreg.registry.artifact_cache import ArtifactCache


def put(cache: ArtifactCache, name: str, size: int, *, used_at: float | None = None) -> Path:
    fd, temp = cache.new_temp()
    with os.fdopen(fd, "wb") as out:
        out.write(b"x" * size)
    path = cache.adopt(temp, name)
    if used_at is not None:
        os.utime(path, (used_at, used_at))
    return path


def test_past_the_budget_the_least_recently_used_file_goes(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path, max_bytes=250)
    now = time.time()
    put(cache, "a" * 64, 100, used_at=now - 30)
    put(cache, "b" * 64, 100, used_at=now - 20)
    assert cache.get("a" * 64) is not None  # used again: now the most recent
    put(cache, "c" * 64, 100)
    assert cache.get("b" * 64) is None and cache.get("a" * 64) is not None and cache.get("c" * 64) is not None
    assert cache.size_bytes() == 200


def test_one_artifact_over_the_budget_is_still_kept_for_its_load(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path, max_bytes=10)
    put(cache, "a" * 64, 5)
    path = put(cache, "b" * 64, 50)
    assert path.read_bytes() == b"x" * 50 and cache.get("a" * 64) is None


def test_a_second_cache_on_the_same_folder_sees_the_same_files(tmp_path: Path) -> None:
    first, second = ArtifactCache(tmp_path, max_bytes=150), ArtifactCache(tmp_path, max_bytes=150)
    put(first, "a" * 64, 100, used_at=time.time() - 60)
    put(second, "b" * 64, 100)  # the other worker's total counts: a goes
    assert first.get("a" * 64) is None and first.get("b" * 64) is not None


def test_stale_partial_downloads_are_swept(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path, max_bytes=100)
    fd, stale = cache.new_temp()
    os.close(fd)
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fd, fresh = cache.new_temp()
    os.close(fd)
    assert cache.sweep_temps() == 1 and not stale.exists() and fresh.exists()
