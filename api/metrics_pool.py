"""One ``/metrics`` for several worker processes (``modelreg serve --workers N``).

Each worker is a replica of its own, but a scrape reaches only one of them, so what it answers
must be the machine's figures, not that worker's. Two kinds of figures need two mechanisms:

- Counters and histograms updated on the request path (``Counter``, ``Histogram`` objects in the
  app's registry) use prometheus_client's multiprocess mode: with ``PROMETHEUS_MULTIPROC_DIR`` set
  (``serve`` makes a fresh folder for the run and removes it at the end) every worker writes them to
  memory-mapped files there and the scrape sums every file, so the totals are exact whichever
  worker answers, a worker that died included.
- Live state read at scrape time by custom collectors (cache outcomes kept by the cache, breaker
  state, queue depth, loaded versions, fleet counts) lives in each worker's memory. Each worker
  writes what its collectors report to ``live_<pid>.json`` in the same folder every
  ``SNAPSHOT_SECONDS`` (on its event loop: no thread races the collectors) and whenever it answers
  a scrape; the scrape pools the files. Counters are summed over every file (a dead worker's last
  figures stay, so totals never go backwards); gauges only over workers still alive, by the rule
  in ``GAUGE_POOLING`` (default: sum). So the other workers' live figures are at most about a
  second old.

The answer has the same metric names, types and labels as a single process's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger("modelreg.metrics")
ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"
SNAPSHOT_SECONDS = 1.0
# How a gauge pools across live workers: "sum" (the default: rows queued), "max" (per label set:
# 1 = some worker has the version loaded; fleet counts every worker sees alike) or "worst" (one
# series: the sample with the highest value, the breaker state of the worst-off worker).
GAUGE_POOLING = {
    "modelreg_cache_breaker_state": "worst",
    "modelreg_loaded_versions": "max",
    "modelreg_replicas_live": "max",
    "modelreg_replicas_lagging": "max",
    # prometheus_client's process collector: the rest (memory, CPU, open fds) add up over workers.
    "process_start_time_seconds": "max",
    "process_max_fds": "max",
}


def multiprocess_dir() -> Path | None:
    """The folder shared by this machine's workers, or None for a single process."""
    value = os.environ.get(ENVIRONMENT)
    return Path(value) if value else None


class LiveRegistry(CollectorRegistry):
    """A CollectorRegistry that remembers which collectors read live state (not Counter/Histogram objects)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: list[Collector] = []

    def register(self, collector: Collector) -> None:
        super().register(collector)
        if not isinstance(collector, MetricWrapperBase):
            self.live.append(collector)


class WorkerPool:
    """This worker's side of a multiprocess ``/metrics``: writes its live figures, pools everyone's."""

    def __init__(self, folder: Path, registry: LiveRegistry) -> None:
        self.folder = folder
        self._registry = registry
        self._pid = os.getpid()
        self._file = folder / f"live_{self._pid}.json"
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Write the live figures every SNAPSHOT_SECONDS on the running event loop (no-op without one)."""
        if self._loop is not None:
            return
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # built outside an event loop: figures are written at each scrape only
            return
        self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.write()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_later(SNAPSHOT_SECONDS, self._tick)

    def write(self) -> list[dict[str, Any]]:
        """Write this worker's live figures (atomically) and return them."""
        families = [_encode(family) for collector in list(self._registry.live) for family in collector.collect()]
        temporary = self._file.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps({"pid": self._pid, "families": families}))
            os.replace(temporary, self._file)
        except OSError as exc:  # the folder removed under a stopping server: the scrape still answers
            log.debug("cannot write %s: %s", self._file, exc)
        return families

    def registry(self) -> CollectorRegistry:
        """A registry that collects the whole machine: every worker's counters and live figures."""
        pooled = CollectorRegistry()
        MultiProcessCollector(pooled, path=str(self.folder))  # type: ignore[no-untyped-call]
        pooled.register(_Pooled(self.write(), self._others()))
        return pooled

    def _others(self) -> Iterator[tuple[bool, list[dict[str, Any]]]]:
        """(alive, families) of every other worker that wrote its figures."""
        for path in self.folder.glob("live_*.json"):
            try:
                snapshot = json.loads(path.read_text())
            except (OSError, ValueError):  # being replaced right now, or removed: the next scrape reads it
                continue
            pid = int(snapshot.get("pid", 0))
            if pid != self._pid:
                yield _alive(pid), list(snapshot.get("families", ()))


class _Pooled(Collector):
    def __init__(self, own: list[dict[str, Any]], others: Iterable[tuple[bool, list[dict[str, Any]]]]) -> None:
        self._own = own
        self._others = list(others)

    def collect(self) -> Iterator[Metric]:
        pooled: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for alive, families in [(True, self._own), *self._others]:
            for family in families:
                kind = family["type"]
                if kind == "gauge" and not alive:
                    continue  # a dead worker queues nothing and has nothing loaded
                name = family["name"]
                if name not in pooled:
                    pooled[name] = Metric(name, family["documentation"], kind)
                    values[name] = {}
                rule = GAUGE_POOLING.get(name, "sum") if kind == "gauge" else "sum"
                into = values[name]
                for sample_name, labels, value in family["samples"]:
                    key = (sample_name, tuple(sorted(labels.items())))
                    if key not in into:
                        into[key] = value
                    elif rule == "sum":
                        into[key] += value
                    else:
                        into[key] = max(into[key], value)
        for name, metric in pooled.items():
            samples = values[name].items()
            if GAUGE_POOLING.get(name) == "worst" and samples:
                samples = [max(samples, key=lambda item: item[1])]  # type: ignore[assignment]
            for (sample_name, labels), value in samples:
                metric.add_sample(sample_name, dict(labels), value)
            yield metric


def _encode(family: Metric) -> dict[str, Any]:
    return {"name": family.name, "type": family.type, "documentation": family.documentation,
            "samples": [[s.name, dict(s.labels), s.value] for s in family.samples]}


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_folder(folder: Path) -> None:
    """Remove the multiprocess folder at the end of a run (its files describe dead processes)."""
    with contextlib.suppress(FileNotFoundError):
        for path in folder.iterdir():
            path.unlink(missing_ok=True)
        folder.rmdir()
