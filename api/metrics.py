"""Prometheus metrics for one replica: request outcomes, cache, batches, inference, loaded models.

Each app owns its own CollectorRegistry, so several apps in one process (tests) never collide.
Request metrics come from a pure ASGI middleware that reads the route template and the
X-Model-Version / X-Cache headers the routes already set: the routes stay free of metrics code,
and a hit costs a couple of counter updates, not a dependency. Every label value is bounded by
what the registry holds: a name it does not have is counted as ``UNKNOWN_MODEL``, a path no route
matches as ``unmatched``, and a version only when one answered (so random traffic adds no series).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from modelreg.api.metrics_pool import LiveRegistry, WorkerPool, multiprocess_dir
from modelreg.serving.breaker import BreakerState
from modelreg.serving.cache import CacheStats
from modelreg.serving.series import OUTCOMES, Series

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# From the timer's own rounding (~1 ms under uvloop) to a stall that fails health checks.
STALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BREAKER_VALUE = {"closed": 0, "half_open": 1, "open": 2}
_CHANGES = {"promote": "promotion", "rollback": "rollback"}
UNKNOWN_MODEL = "<unknown>"  # the label of every name the registry does not have
_CACHE_OUTCOMES = frozenset(OUTCOMES)


class Children:
    """``metric.labels(*values)``, remembered: on the request path a dict lookup instead of
    prometheus_client's label checks and lock (~2 µs a call, four calls a request, a tenth of a
    hit). Holds what the metric itself holds: one child per label set it has seen."""

    __slots__ = ("_metric", "_seen")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._seen: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._seen.get(values)
        if child is None:
            child = self._seen[values] = self._metric.labels(*values)
        return child


class Metrics:
    """The replica's metrics; the serving layer reports through plain callbacks (no Prometheus there)."""

    def __init__(self) -> None:
        self.registry: CollectorRegistry = LiveRegistry()
        # `modelreg serve --workers N`: one /metrics for every worker of the machine (api/metrics_pool.py).
        folder = multiprocess_dir()
        self._workers = WorkerPool(folder, self.registry) if folder is not None else None
        self.requests = Counter("modelreg_requests", "Requests by model, version, route and status",
                                ["model", "version", "route", "status"], registry=self.registry)
        self.latency = Histogram("modelreg_request_seconds", "Request latency by route and cache outcome",
                                 ["route", "cache"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_rows = Histogram("modelreg_batch_size", "Rows per model execution (1 = unbatched)",
                                    ["model"], buckets=BATCH_BUCKETS, registry=self.registry)
        # The batcher's share of a miss's latency: the delay waiting for company plus the passes ahead.
        self.batch_wait = Histogram("modelreg_batch_wait_seconds",
                                    "How long the longest-waiting request of each execution waited for it, "
                                    "from joining its model's queue", ["model"], buckets=LATENCY_BUCKETS,
                                    registry=self.registry)
        self.inference = Histogram("modelreg_inference_seconds", "Time inside the runtime per execution",
                                   ["model", "version"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.changes = Counter("modelreg_production_changes", "Promotions and rollbacks that succeeded",
                               ["model", "action"], registry=self.registry)
        # Per model version: what the cache did for predictions, and the runtime time it spared.
        self.cache_requests = Counter("modelreg_cache_requests", "Predictions by model, version and cache outcome",
                                      ["model", "version", "outcome"], registry=self.registry)
        self.seconds_saved = Counter("modelreg_inference_seconds_saved",
                                     "Inference seconds the cache saved: hits x the version's mean runtime "
                                     "seconds per computed row (this replica's measure)",
                                     ["model", "version"], registry=self.registry)
        # What no stage timer sees: the loop held (a GC pass, a blocking handler, the core given to
        # inference) delays every request at once; the collector's passes are one such cause.
        self.loop_lag = Histogram("modelreg_event_loop_lag_seconds",
                                  "How late the event loop ran a timer due every 0.25 s: what every request "
                                  "waited at that moment", buckets=STALL_BUCKETS, registry=self.registry)
        # process_resident_memory_bytes, process_cpu_seconds_total, open fds: per worker, pooled.
        ProcessCollector(registry=self.registry)
        self.requests_by = Children(self.requests)
        self.latency_by = Children(self.latency)
        self.cache_requests_by = Children(self.cache_requests)
        self.seconds_saved_by = Children(self.seconds_saved)
        # The console's rolling figures (serving/series.py); pooled in Redis by build_services when there is one.
        self.series = Series()

    def on_batch(self, label: str, rows: int, waited: float) -> None:
        model = label.rpartition(":")[0]
        self.batch_rows.labels(model).observe(rows)
        self.batch_wait.labels(model).observe(waited)

    def on_inference(self, label: str, rows: int, seconds: float) -> None:
        model, _, version = label.rpartition(":")
        self.inference.labels(model, version).observe(seconds)
        self.series.record_inference(model, version, rows, seconds)

    def on_loop_lag(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)

    def watch_gc(self, passes: Callable[[], list[tuple[list[int], float]]], bounds: tuple[float, ...]) -> None:
        """Export the collector's passes as ``modelreg_gc_pause_seconds{generation}`` (GcPauses.snapshot)."""
        self.registry.register(_GcPasses(passes, bounds))

    def watch(self, *, cache_stats: Callable[[], CacheStats], breaker: Callable[[], BreakerState],
              queue_depth: Callable[[], int], loaded: Callable[[], list[tuple[str, int]]],
              queue_depths: Callable[[], dict[str, int]] = dict) -> None:
        """Read the live state (counters kept by the cache, queue, loaded versions) at scrape time."""
        self.registry.register(_LiveState(cache_stats, breaker, queue_depth, loaded, queue_depths))
        if self._workers is not None:
            self._workers.start()

    def watch_fleet(self, *, live: Callable[[], int], lagging: Callable[[], int]) -> None:
        """Read the fleet counts the replica board keeps (refreshed on its heartbeat, not at scrape time)."""
        self.registry.register(_Fleet(live, lagging))

    def render(self) -> tuple[bytes, str]:
        registry = self._workers.registry() if self._workers is not None else self.registry
        return generate_latest(registry), CONTENT_TYPE_LATEST


class _GcPasses(Collector):
    """The collector's passes as a histogram per generation, read at scrape time: timed inside the
    pass itself, where no metric's lock may be taken (serving/gc_pauses.py)."""

    def __init__(self, passes: Callable[[], list[tuple[list[int], float]]], bounds: tuple[float, ...]) -> None:
        self._passes = passes
        self._bounds = bounds

    def collect(self) -> Iterator[Any]:
        family = HistogramMetricFamily("modelreg_gc_pause_seconds", "Garbage collector passes by generation",
                                       labels=["generation"])
        for generation, (counts, seconds) in enumerate(self._passes()):
            cumulative = list(accumulate(counts))
            buckets = [(str(float(bound)), float(n)) for bound, n in zip(self._bounds, cumulative, strict=False)]
            family.add_metric([str(generation)], [*buckets, ("+Inf", float(cumulative[-1]))], seconds)
        yield family


class _LiveState(Collector):
    def __init__(self, cache_stats: Callable[[], CacheStats], breaker: Callable[[], BreakerState],
                 queue_depth: Callable[[], int], loaded: Callable[[], list[tuple[str, int]]],
                 queue_depths: Callable[[], dict[str, int]] = dict) -> None:
        self._queue_depths = queue_depths
        self._cache_stats = cache_stats
        self._breaker = breaker
        self._queue_depth = queue_depth
        self._loaded = loaded

    def collect(self) -> Iterator[Any]:
        stats = self._cache_stats()
        outcomes = CounterMetricFamily("modelreg_cache", "Cache outcomes (first_level_hits is part of hits)",
                                       labels=["outcome"])
        for outcome in ("hits", "misses", "coalesced", "bypass", "errors", "first_level_hits", "oversized",
                        "writes_dropped", "lease_waits", "lease_takeovers", "leases_lost"):
            outcomes.add_metric([outcome], getattr(stats, outcome))
        yield outcomes
        yield CounterMetricFamily("modelreg_cache_redis_round_trips",
                                  "Round trips on the cache's own Redis channel (one server or Sentinel): each "
                                  "carries a batch of reads-or-leases, write-backs riding along",
                                  value=stats.round_trips)
        state = self._breaker()
        breaker = GaugeMetricFamily("modelreg_cache_breaker_state",
                                    "Redis circuit breaker: 0 closed, 1 half-open, 2 open", labels=["state"])
        breaker.add_metric([state], BREAKER_VALUE.get(state, -1))
        yield breaker
        yield GaugeMetricFamily("modelreg_batch_queue_rows", "Rows waiting for a batch, all models",
                                value=self._queue_depth())
        per_model = GaugeMetricFamily("modelreg_model_queue_rows",
                                      "Rows waiting for a batch per model (the autoscaler's signal)", labels=["model"])
        for model, rows in sorted(self._queue_depths().items()):
            per_model.add_metric([model], rows)
        yield per_model
        loaded = GaugeMetricFamily("modelreg_loaded_versions", "Versions loaded in this replica",
                                   labels=["model", "version"])
        for model, version in self._loaded():
            loaded.add_metric([model, str(version)], 1)
        yield loaded


class _Fleet(Collector):
    # Counted by the replica board on its heartbeat: a scrape must not wait on Redis or SQL.
    def __init__(self, live: Callable[[], int], lagging: Callable[[], int]) -> None:
        self._live = live
        self._lagging = lagging

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily("modelreg_replicas_live", "Replicas whose status heartbeat is current",
                                value=self._live())
        yield GaugeMetricFamily("modelreg_replicas_lagging",
                                "Live replicas serving, for some model, another production version than the registry's",
                                value=self._lagging())


class RequestMetrics:
    """ASGI middleware: counts and times every request by its route template and outcome."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, Any] = {"status": 500, "version": "", "cache": "none"}

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                for key, value in message.get("headers", ()):
                    if key == b"x-model-version":
                        seen["version"] = value.decode("latin-1")
                    elif key == b"x-cache":
                        seen["cache"] = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self._observe(scope, seen, time.perf_counter() - started)

    def _observe(self, scope: dict[str, Any], seen: dict[str, Any], seconds: float) -> None:
        route = scope.get("modelreg.route") or getattr(scope.get("route"), "path", None)
        if route is None:  # no route matched (404): one label, not one per path tried
            route = "unmatched"
        if route == "/metrics":
            return
        model = _model_label(scope)
        version = seen["version"] if model != UNKNOWN_MODEL else ""
        status = int(seen["status"])
        self.metrics.requests_by(model, version, route, str(status)).inc()
        self.metrics.latency_by(route, seen["cache"]).observe(seconds)
        if route.endswith(_SERVED) and model and model != UNKNOWN_MODEL:
            self._served(model, version, seen["cache"], status, seconds)
        action = _CHANGES.get(route.rpartition("/")[2]) if route.startswith("/admin/models/") else None
        if action is not None and status == 200 and scope.get("method") == "POST":
            self.metrics.changes.labels(model, action).inc()

    def _served(self, model: str, version: str, cache: str, status: int, seconds: float) -> None:
        # The hit path: a counter and a few additions in the series.
        saved = self.metrics.series.record(model, version, cache, status, seconds)
        if cache in _CACHE_OUTCOMES and version:
            self.metrics.cache_requests_by(model, version, cache).inc()
            if saved:
                self.metrics.seconds_saved_by(model, version).inc(saved)


_SERVED = ("/predict", "/infer")  # the route templates whose answers are predictions (series, cache figures)


def _model_label(scope: dict[str, Any]) -> str:
    """The request's model name when the registry has it (as this replica last read it), else UNKNOWN_MODEL."""
    name = (scope.get("path_params") or {}).get("name")
    if name is None:
        return ""  # a route without a model: /admin/models, /metrics, ...
    if scope.get("modelreg.model_known"):  # set by the fast path on an answer: no lookup on a hit
        return str(name)
    app = scope.get("app")
    services = getattr(getattr(app, "state", None), "services", None)
    # Asked after the response, so a model this very request found in the registry (a miss that read it) counts.
    if services is not None and services.manager.knows(name):
        return str(name)
    return UNKNOWN_MODEL
