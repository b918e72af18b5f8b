"""What one replica runs on: built once from Settings in the app's lifespan (or by the CLI)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import anyio.from_thread
from sqlalchemy import Engine

from api.auth import Authenticator, resolve_admin_token
from api.serving import Serving
from api.serving.breaker import CircuitBreaker
from api.serving.cache import PredictionCache, make_redis
from api.serving.events import ChangeFeed
from api.serving.first_level import FirstLevel
from api.serving.manager import ModelManager
from api.serving.reaper import Reaper
from api.settings import Settings
from api.upload_check import PluginValidator
from plugins.discovery import PluginSet
from registry import LocalArtifactStore, RegistryService
from registry import schema
from registry.db import make_engine, make_sessions

log = logging.getLogger("modelreg")


@dataclass
class Services:
    settings: Settings
    engine: Engine
    registry: RegistryService
    plugins: PluginSet
    auth: Authenticator
    manager: ModelManager
    serving: Serving
    feed: ChangeFeed
    reaper: Reaper

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

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self.manager.refresh)
        self.feed.start(lambda: self.reaper.run_forever(self.settings.reap_interval_seconds))

    async def stop(self) -> None:
        await self.feed.stop()
        await self.serving.close()
        self.manager.close()
        self.engine.dispose()


def build_services(settings: Settings) -> Services:
    """Open the registry (upgrading the embedded default), discover plugins, wire the cache."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url()
    if settings.should_auto_migrate():
        schema.upgrade(url)
    engine = make_engine(url)
    schema.ensure_current(engine, url)
    plugins = PluginSet.discover(settings.plugin_allowlist())
    for status in plugins.statuses():
        log.info("runtime plugin %s: %s", status.name, status.status)
    registry = RegistryService(
        make_sessions(engine), LocalArtifactStore(settings.resolved_artifact_dir()),
        PluginValidator(plugins, settings.device), settings.max_artifact_bytes,
    )
    manager = ModelManager(registry, plugins, default_device=settings.device,
                           grace_seconds=settings.unload_grace_seconds,
                           intra_op_threads=settings.intra_op_threads)
    redis = make_redis(settings.redis_url)
    first_level = FirstLevel(settings.first_level_bytes) if settings.first_level_bytes > 0 else None
    cache = PredictionCache(redis, breaker=CircuitBreaker(), first_level=first_level)
    serving = Serving(manager, cache, prefix=settings.cache_prefix,
                      default_ttl_seconds=settings.default_cache_ttl_seconds,
                      inference_threads=settings.inference_threads or len(os.sched_getaffinity(0)))
    feed = ChangeFeed(manager, redis, prefix=settings.cache_prefix, subscribe_url=settings.redis_url,
                      poll_interval=settings.poll_interval_seconds)
    reaper = Reaper(redis, settings.cache_prefix, manager.live_generations)
    return Services(settings=settings, engine=engine, registry=registry, plugins=plugins,
                    auth=Authenticator(resolve_admin_token(settings)), manager=manager, serving=serving,
                    feed=feed, reaper=reaper)
