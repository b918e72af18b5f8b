"""``modelreg serve --workers N``: N processes on one machine, each a replica of its own.

Each worker builds its own services (its own replica id on the board, its own loaded models,
first-level cache, batcher and inference threads) and they share the listening socket, the
registry, Redis and the artifact store exactly as replicas on separate machines do. What this
module adds for the machine as a whole:

- a fresh ``PROMETHEUS_MULTIPROC_DIR`` for the run, removed at the end, so ``/metrics`` answers
  every worker's totals whichever worker takes the scrape (``api/metrics_pool.py``);
- CPU shares: unless the operator set them, each worker gets ``cores // N`` inference threads and
  intra-op threads, so N workers together use the machine's cores once instead of N times over
  (N runtimes each spinning a thread per core fight for the same cores).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from modelreg.api.metrics_pool import ENVIRONMENT, remove_folder
from modelreg.api.settings import Settings
from modelreg.plugins.cpus import usable_cpus

log = logging.getLogger("modelreg.workers")
THREAD_SETTINGS = ("MODELREG_INFERENCE_THREADS", "MODELREG_INTRA_OP_THREADS")


def cores() -> int:
    """The CPUs this process may really use: its CPU set, capped by a container's CPU quota."""
    return usable_cpus()


@contextlib.contextmanager
def prepared(workers: int, settings: Settings) -> Iterator[Path | None]:
    """Set the environment the workers inherit for the run; yields the metrics folder (None for one worker)."""
    if workers <= 1:
        yield None
        return
    if settings.redis_url is None:
        log.warning("%d workers without MODELREG_REDIS_URL: each worker keeps its own cache and lists only itself "
                    "as a replica; set MODELREG_REDIS_URL to share them", workers)
    saved = {name: os.environ.get(name) for name in (ENVIRONMENT, *THREAD_SETTINGS)}
    if saved[ENVIRONMENT]:
        log.info("%s is set; this run uses a fresh folder of its own instead (stale files would add up)", ENVIRONMENT)
    folder = Path(tempfile.mkdtemp(prefix="modelreg-metrics-"))
    os.environ[ENVIRONMENT] = str(folder)
    share = max(1, cores() // workers)
    for name in THREAD_SETTINGS:
        if not saved[name]:
            os.environ[name] = str(share)
    log.info("%d workers on %d cores: %d inference and intra-op thread(s) each unless set; metrics pooled in %s",
             workers, cores(), share, folder)
    try:
        yield folder
    finally:
        remove_folder(folder)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
