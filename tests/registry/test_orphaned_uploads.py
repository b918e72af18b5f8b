"""Uploads cut short by a killed replica leave temp files; the next start sweeps them, never a live one."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

from modelreg.registry import LocalArtifactStore

HOUR = 3600.0


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_an_old_temp_file_that_nobody_holds_is_swept(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    orphan = tmp_path / "tmp" / "upload-killed"
    orphan.write_bytes(b"half an artifact")
    _age(orphan, HOUR)
    assert store.sweep_orphans() == 1
    assert not orphan.exists()


def test_a_recent_temp_file_is_left_alone_even_without_a_lock(tmp_path: Path) -> None:
    # Locks may not cross hosts on a shared folder: a file still being written to is never touched.
    store = LocalArtifactStore(tmp_path)
    recent = tmp_path / "tmp" / "upload-recent"
    recent.write_bytes(b"streaming")
    assert store.sweep_orphans() == 0
    assert recent.exists()


def test_an_upload_running_in_another_process_is_never_touched(tmp_path: Path) -> None:
    # Another replica sharing the folder, mid-upload: its put() holds the temp file's lock.
    writer = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from modelreg.registry import LocalArtifactStore\n"
         "class Slow:\n"
         "    def read(self, n):\n"
         "        sys.stdout.write('writing\\n'); sys.stdout.flush(); time.sleep(30); return b''\n"
         f"LocalArtifactStore(Path({str(tmp_path)!r})).put(Slow(), 10**6)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
        (live,) = (tmp_path / "tmp").glob("upload-*")
        _age(live, HOUR)  # as if it had stalled for an hour: its lock still says it is alive
        assert LocalArtifactStore(tmp_path).sweep_orphans() == 0
        assert live.exists()
    finally:
        writer.kill()
        writer.wait()
    # Killed mid-upload: now it is an orphan.
    assert LocalArtifactStore(tmp_path).sweep_orphans() == 1


def test_a_finished_upload_leaves_nothing_to_sweep(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    stored = store.put(io.BytesIO(b"weights"), 1000)
    assert stored.path.read_bytes() == b"weights"
    assert list((tmp_path / "tmp").iterdir()) == []
    assert store.sweep_orphans(older_than_seconds=0) == 0
