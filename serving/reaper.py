"""Background reclaiming of dead cache namespaces: old generations and deleted models.

Never on a request path: invalidation is a new key (keys.py), and every key has a TTL, so the
reaper only gives memory back sooner. It SCANs in small batches and sleeps to stay under a
rate, so a pass over a large cache never monopolises Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

import redis.asyncio as aioredis

from modelreg.serving.keys import all_predictions_pattern, parse_prediction_key
from modelreg.serving.tasks import reraise_if_cancelled

log = logging.getLogger(__name__)


class Reaper:
    """UNLINKs prediction keys whose generation is behind the model's live one or whose model is gone."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        live: Callable[[], Mapping[str, int]],
        *,
        batch: int = 500,
        max_keys_per_second: int = 5000,
    ) -> None:
        if batch < 1 or max_keys_per_second < 1:
            raise ValueError(f"batch and max_keys_per_second must be >= 1, got {batch} and {max_keys_per_second}")
        self._redis = redis
        self._prefix = prefix
        self._live = live
        self._batch = batch
        self._rate = max_keys_per_second
        self._stopping = False
        self._wake: asyncio.Event | None = None

    def stop(self) -> None:
        """Ask ``run_forever`` to end after the Redis command in flight (a cancel could interrupt it
        inside the Redis client, which does not always come back from that)."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def run_once(self) -> int:
        """One SCAN pass; returns the number of keys unlinked. Errors are logged, never raised."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        examined = unlinked = 0
        cursor = 0
        try:
            pattern = all_predictions_pattern(self._prefix)
            while True:
                cursor, keys = await self._redis.scan(cursor, match=pattern, count=self._batch)
                # Read the live view per batch: a model created during a long pass is not reaped.
                live = self._live()
                if not live:
                    # An empty view is far more likely "not synced yet" than "every model deleted";
                    # reaping on it would empty the cache. TTLs cover the rare real case.
                    log.debug("reaper: no live models known; skipping this pass")
                    return unlinked
                dead = [k for k in keys if _is_dead(k, live)]
                if dead:
                    unlinked += int(await self._redis.unlink(*dead))
                examined += len(keys)
                pause = examined / self._rate - (loop.time() - start)
                if pause > 0:
                    await asyncio.sleep(pause)
                if int(cursor) == 0 or self._stopping:
                    break
        except Exception as exc:  # a background job: log and let the next pass (or the TTL) do it
            reraise_if_cancelled(exc)
            log.warning("reaper: pass stopped after unlinking %d keys: %s: %s", unlinked, type(exc).__name__, exc)
            return unlinked
        if unlinked:
            log.info("reaper: unlinked %d dead prediction keys of %d examined", unlinked, examined)
        return unlinked

    async def run_forever(self, interval_seconds: float) -> None:
        """``run_once`` every ``interval_seconds`` until ``stop()`` (or a cancel)."""
        self._wake = asyncio.Event()
        while not self._stopping:
            try:
                await self.run_once()
            except Exception as exc:  # run_once already logs Redis trouble; this guards the loop itself
                reraise_if_cancelled(exc)
                log.exception("reaper: unexpected error")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval_seconds)


def _is_dead(key: bytes | str, live: Mapping[str, int]) -> bool:
    parsed = parse_prediction_key(key)
    if parsed is None:
        return False  # not ours to judge: leave it to its TTL
    model, generation, _ = parsed
    current = live.get(model)
    return current is None or generation < current
