"""What one replica runs on: built once from Settings in the app's lifespan (or by the CLI)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio.from_thread
from sqlalchemy import Engine

from modelreg.api.auth import Authenticator, resolve_admin_token
from modelreg.api.metrics import STALL_BUCKETS, Metrics
from modelreg.api.release_metrics import ShadowMetrics
from modelreg.api.settings import Settings
from modelreg.plugins.cpus import usable_cpus
from modelreg.plugins.discovery import PluginSet
from modelreg.registry import RegistryService, TokenService, Unavailable, open_registry
from modelreg.registry.opening import open_artifacts
from modelreg.serving import Serving
from modelreg.serving.breaker import CircuitBreaker
from modelreg.serving.cache import PredictionCache, make_redis
from modelreg.serving.events import ChangeFeed
from modelreg.serving.first_level import FirstLevel
from modelreg.serving.gc_pauses import GcPauses
from modelreg.serving.loop_lag import LoopLag
from modelreg.serving.manager import ModelManager
from modelreg.serving.reaper import Reaper
from modelreg.serving.replicas import ReplicaBoard
from modelreg.serving.validation import PluginValidator, RegistryStageCheck

log = logging.getLogger("modelreg")
# At shutdown, how long cache writes and model executions still running (their requests are gone) may take.
SHUTDOWN_WAIT_SECONDS = 5.0


@dataclass
class Services:
    settings: Settings
    engine: Engine
    registry: RegistryService
    tokens: TokenService
    plugins: PluginSet
    auth: Authenticator
    manager: ModelManager
    serving: Serving
    feed: ChangeFeed
    reaper: Reaper
    metrics: Metrics
    replicas: ReplicaBoard
    loop_lag: LoopLag
    gc_pauses: GcPauses

    def changed(self, model: str) -> None:
        """After a committed change: switch this replica now, then tell the others."""
        try:
            self.manager.refresh(model)
        except Exception:  # the change is committed; polling will retry the switch
            log.exception("refreshing %s after a change failed; the next poll retries", model)
        try:
            anyio.from_thread.run(self.feed.publish, model)
        except RuntimeError:  # not called from a worker thread (e.g. the CLI): nobody to tell
            pass

    async def _released(self, model: str) -> None:
        """After the guard monitor rolled back or ended a guard: switch here, tell the others."""
        await anyio.to_thread.run_sync(self.changed, model)

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self.manager.refresh)
        self.replicas.start()
        self.metrics.series.start()
        self.loop_lag.start()
        self.gc_pauses.start()
        self.serving.start_releases(self._released)  # issue 13's guard monitor
        self.feed.start(lambda: self.reaper.run_forever(self.settings.reap_interval_seconds))

    async def stop(self) -> None:
        """After the last request (uvicorn waits up to MODELREG_SHUTDOWN_GRACE_SECONDS): finish, unload, close."""
        self.reaper.stop()  # ends by itself; the feed's bounded cancel is the fallback
        await self.feed.stop()
        hung = await self.serving.close(wait_seconds=SHUTDOWN_WAIT_SECONDS)
        if hung:
            log.warning("%d inference thread(s) still running after %gs (a hung model?); exiting without them",
                        hung, SHUTDOWN_WAIT_SECONDS)
        await self.replicas.stop()  # leave the replica list before the models go
        await self.metrics.series.stop()
        self.loop_lag.stop()
        self.gc_pauses.stop()
        unloaded = self.manager.loaded_versions()
        self.manager.close()
        self.engine.dispose()
        log.info("shut down: unloaded %s", ", ".join(f"{n} v{v}" for n, v in unloaded) or "no models")


def build_services(settings: Settings, metrics: Metrics | None = None) -> Services:
    """Open the registry (upgrading the embedded default), discover plugins, wire the cache."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    plugins = PluginSet.discover(settings.plugin_allowlist())
    for status in plugins.statuses():
        log.info("runtime plugin %s: %s", status.name, status.status)
    stage_check = RegistryStageCheck()  # pipelines' stages are checked in the registry that validates them
    artifacts = open_artifacts(settings.resolved_artifact_url(), cache_dir=settings.resolved_artifact_cache_dir(),
                               cache_bytes=settings.artifact_cache_bytes,
                               max_artifact_bytes=settings.max_artifact_bytes,
                               create_bucket=settings.artifact_create_bucket)
    try:
        artifacts.sweep_orphans()  # uploads cut short by a replica killed mid-upload
    except Unavailable as exc:  # an object store that does not answer now: the next start sweeps
        log.warning("orphan sweep skipped: %s", exc)
    opened = open_registry(settings.resolved_database_url(), migrate=settings.should_auto_migrate(),
                           artifacts=artifacts,
                           validator=PluginValidator(plugins, settings.device, stage_check),
                           max_artifact_bytes=settings.max_artifact_bytes)
    engine, registry, tokens = opened.engine, opened.registry, opened.tokens
    stage_check.bind(registry)
    auth = Authenticator(_bootstrap_token(settings, tokens), tokens, predict_auth=settings.predict_auth,
                         cache_seconds=settings.predict_auth_cache_seconds)
    manager = ModelManager(registry, plugins, default_device=settings.device,
                           grace_seconds=settings.unload_grace_seconds,
                           intra_op_threads=settings.intra_op_threads,
                           max_on_demand=settings.max_on_demand_versions, gc_freeze=settings.gc_freeze)
    redis = make_redis(settings.redis_url, embedded_max_bytes=settings.embedded_cache_bytes)
    first_level = FirstLevel(settings.first_level_bytes) if settings.first_level_bytes > 0 else None
    cache = PredictionCache(redis, breaker=CircuitBreaker(), first_level=first_level,
                            max_wait_ms=int(settings.inference_timeout_seconds * 1000))
    metrics = metrics or Metrics()
    serving = Serving(manager, cache, registry=registry, plugins=plugins, prefix=settings.cache_prefix,
                      default_ttl_seconds=settings.default_cache_ttl_seconds,
                      inference_threads=settings.inference_threads or usable_cpus(),  # CPU set and cgroup quota
                      max_queue_rows=settings.max_queued_rows,
                      inference_timeout_seconds=settings.inference_timeout_seconds,
                      on_batch=metrics.on_batch, on_inference=metrics.on_inference,
                      redis=redis)  # shadow figures and guard outcomes are pooled there (issue 13)
    metrics.registry.register(ShadowMetrics(serving.shadow.known))
    metrics.watch(cache_stats=lambda: cache.stats, breaker=lambda: cache.breaker_state,
                  queue_depth=serving.batcher.queue_depth, loaded=manager.loaded_versions,
                  queue_depths=serving.batcher.queue_depths)
    feed = ChangeFeed(manager, redis, prefix=settings.cache_prefix, subscribe_url=settings.redis_url,
                      poll_interval=settings.poll_interval_seconds)
    replicas = ReplicaBoard(manager, redis, prefix=settings.cache_prefix)
    metrics.watch_fleet(live=lambda: replicas.live, lagging=lambda: replicas.lagging)
    if settings.redis_url is not None:  # the console's figures, pooled; the embedded default keeps its own
        metrics.series.pool(redis, settings.cache_prefix)
    reaper = Reaper(redis, settings.cache_prefix, registry)  # dead is what SQL says, not what is loaded here
    gc_pauses = GcPauses(STALL_BUCKETS)
    metrics.watch_gc(gc_pauses.snapshot, gc_pauses.bounds)
    return Services(settings=settings, engine=engine, registry=registry, tokens=tokens, plugins=plugins,
                    auth=auth, manager=manager, serving=serving, feed=feed, reaper=reaper, metrics=metrics,
                    replicas=replicas, loop_lag=LoopLag(metrics.on_loop_lag), gc_pauses=gc_pauses)


def _bootstrap_token(settings: Settings, tokens: TokenService) -> str | None:
    bootstrap = resolve_admin_token(settings)
    if bootstrap is None and not any(t.active and t.role == "admin" for t in tokens.list()):
        log.warning("no admin token exists: set MODELREG_ADMIN_TOKEN, or create one with "
                    "`modelreg tokens create NAME --role admin --local` (same MODELREG_DATABASE_URL)")
    return bootstrap
