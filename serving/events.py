"""Keeping replicas in step: change events over Redis pub/sub, and polling as the safety net.

Classic pub/sub works alike on every topology ``redis_client`` connects to: on Sentinel the
subscriber follows the master (a failover drops the connection; the listener reconnects, asks the
sentinels again and re-reads the registry, since messages sent meanwhile are lost); in a Cluster a
PUBLISH on any node reaches subscribers on every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from modelreg.registry import Unavailable
from modelreg.serving.keys import events_channel
from modelreg.serving.manager import ModelManager
from modelreg.serving.redis_client import RedisClient, connect, subscribe
from modelreg.serving.tasks import reraise_if_cancelled

log = logging.getLogger("modelreg.events")
FAILURE_LOG_EVERY_SECONDS = 60.0


class ChangeFeed:
    """Publishes ``model changed`` and refreshes the manager on every message or poll tick."""

    def __init__(self, manager: ModelManager, publisher: RedisClient, *, prefix: str,
                 subscribe_url: str | None, poll_interval: float) -> None:
        self._manager = manager
        self._publisher = publisher
        self._channel = events_channel(prefix)
        self._subscribe_url = subscribe_url
        self._poll_interval = poll_interval
        self._tasks: list[asyncio.Task[None]] = []
        self._failing_since: float | None = None
        self._last_warning = 0.0
        self.received = 0

    async def publish(self, model: str) -> None:
        """Tell every replica; a lost message only delays them until their next poll."""
        try:
            await self._publisher.publish(self._channel, model)
        except Exception as exc:  # Redis down must not undo or fail a committed change
            log.warning("could not publish a change of %s (%s); replicas will see it on their next poll",
                        model, type(exc).__name__)

    def start(self, *extra: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Poll, listen (when there is Redis) and run ``extra`` jobs beside them until ``stop``."""
        self._tasks.append(asyncio.create_task(self._poll(), name="modelreg-poll"))
        if self._subscribe_url is not None:
            self._tasks.append(asyncio.create_task(self._listen(self._subscribe_url), name="modelreg-events"))
        for job in extra:
            self._tasks.append(asyncio.create_task(job()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: shutdown must not wait on a Redis connection that never answers.
            await asyncio.wait(self._tasks, timeout=5)
        self._tasks.clear()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            await self._refresh()

    async def _refresh(self, name: str | None = None) -> None:
        """Re-read the registry; while it is down, keep serving what is loaded and say so (not every tick)."""
        try:
            await asyncio.to_thread(self._manager.refresh, name)
        except Exception as exc:
            reraise_if_cancelled(exc)
            now = time.monotonic()
            if self._failing_since is None or now - self._last_warning >= FAILURE_LOG_EVERY_SECONDS:
                what = "registry unreachable" if isinstance(exc, Unavailable) else "refreshing live versions failed"
                first_line = str(exc).partition("\n")[0]
                cause = exc.cause if isinstance(exc, Unavailable) else f"{type(exc).__name__}: {first_line}"
                log.warning("%s (%s); serving the versions already loaded, retrying every %gs", what, cause,
                            self._poll_interval, exc_info=not isinstance(exc, Unavailable))  # a bug gets its traceback
                self._last_warning = now
            if self._failing_since is None:
                self._failing_since = now
        else:
            if self._failing_since is not None:
                log.warning("registry reachable again after %.1fs; live versions re-read",
                            time.monotonic() - self._failing_since)
                self._failing_since = None

    async def _listen(self, url: str) -> None:
        while True:
            # No read timeout: a quiet channel is not a dead one (get_message polls every second).
            client = connect(url, timeout_seconds=None, connect_timeout_seconds=1.0)
            pubsub = None
            try:
                pubsub = await subscribe(client, self._channel)
                # Anything may have changed while we were not listening.
                await self._refresh()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    self.received += 1
                    name = message["data"].decode() if isinstance(message["data"], bytes) else str(message["data"])
                    # A registry failure here is the poll's to report; it must not drop the subscription.
                    await self._refresh(name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reraise_if_cancelled(exc)
                log.warning("change events unavailable (%s); polling every %.1fs until Redis is back",
                            type(exc).__name__, self._poll_interval)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    if pubsub is not None:
                        await pubsub.aclose()
                    await client.aclose()
