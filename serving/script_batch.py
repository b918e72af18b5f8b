"""One Lua script called by many requests of one event-loop turn, sent as one command.

Every miss asks Redis one question (``cache.READ_OR_LEASE``: the value, or the lease). Asked one
by one, each call pays redis-py's whole per-command cost (connection checkout, packing, a write,
a timed read): ~85 µs of this process's CPU, measured, against ~27 µs a call inside a pipeline of
16. On the batch's own ``PipeChannel`` (one server or Sentinel) the calls of a batch go out as one
EVALSHA of a wrapper (``_EACH``) that runs the script once per call: one command to pack and one
reply to read for the whole batch, and one script invocation for Redis to set up. Each call still
gets its own answer or its own error (the wrapper runs each under ``pcall``). On a Cluster the
calls' keys lie in many slots: there they go as one redis-py pipeline of EVALSHAs, split by node.
Misses come in bursts (a batch of answers goes out, as many new requests come in), so the calls
made while one batch is in flight go together in the next: group commit, with no delay added (a
lone call goes out at once).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

from modelreg.serving.redis_client import RedisClient
from modelreg.serving.redis_pipe import PipeChannel

Call = tuple[Sequence[str], Sequence[Any], "asyncio.Future[Any]"]

# ARGV[1..3]: the number of calls, keys per call, arguments per call; then each call's arguments.
# A READONLY error (a demoted master) fails the whole command, so that the channel reconnects.
_EACH = """
local function call(KEYS, ARGV)
%s
end
local calls, nk, na = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i = 0, calls - 1 do
  local keys, args = {}, {}
  for j = 1, nk do keys[j] = KEYS[i * nk + j] end
  for j = 1, na do args[j] = ARGV[3 + i * na + j] end
  local ok, answer = pcall(call, keys, args)
  if ok then
    if answer == nil then answer = false end
    out[i + 1] = answer
  else
    local message = type(answer) == 'table' and answer.err or tostring(answer)
    if string.sub(message, 1, 8) == 'READONLY' then return redis.error_reply(message) end
    out[i + 1] = redis.error_reply(message)
  end
end
return out
"""


class ScriptBatch:
    """``await batch(keys, args)``: the script's answer, or the error Redis gave for this call."""

    def __init__(self, redis: RedisClient, source: str, channel: PipeChannel | None = None) -> None:
        """``channel``: one shared with another batch (both ride one connection), else a channel of its own."""
        self._redis = redis
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()
        self._each = _EACH % source
        self._each_sha = hashlib.sha1(self._each.encode()).hexdigest()
        self._script: Any = redis.register_script(source)
        # One server or Sentinel: a connection of the batch's own, without redis-py's per-command cost.
        self._channel = channel if channel is not None else PipeChannel.of(redis)
        self._queue: list[Call] = []
        self._sender: asyncio.Task[None] | None = None

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((keys, args, future))
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._send(), name="modelreg-script-batch")
        return await future

    async def run(self, keys: Sequence[Sequence[str]], args: Sequence[Sequence[Any]], *,
                  ride_within: float | None = None) -> list[Any]:
        """Every call's answer (an exception object where that call failed), in one round trip now, or
        with the channel's next one within ``ride_within`` seconds (``PipeChannel.ride``).

        For a caller that has its own batch already (the cache's write-back): no queue, no futures.
        Every call must have as many keys and as many arguments as the first. Raises only when the
        round trip itself failed (Redis down, a timeout).
        """
        answers = await self._exchange(keys, args, ride_within)
        missing = [i for i, answer in enumerate(answers) if isinstance(answer, NoScriptError)]
        if missing:  # a restarted or failed-over Redis: load the script once, ask those again
            await self._load()
            again = await self._exchange([keys[i] for i in missing], [args[i] for i in missing])
            for i, answer in zip(missing, again, strict=True):
                answers[i] = answer
        return answers

    async def _send(self) -> None:
        await asyncio.sleep(0)  # let the other requests of this loop turn join
        while self._queue:
            calls, self._queue = self._queue, []
            calls = [call for call in calls if not call[2].done()]  # a request cancelled meanwhile
            if not calls:
                continue
            try:
                if len(calls) == 1 and self._channel is None:
                    answers = await self._one(calls[0])
                else:
                    answers = await self.run([keys for keys, _, _ in calls], [args for _, args, _ in calls])
            except BaseException as exc:  # the whole batch failed (Redis down): each caller sees why
                for _, _, future in calls:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else ConnectionError(str(exc)))
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, _, future), answer in zip(calls, answers, strict=True):
                if future.done():
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    async def _one(self, call: Call) -> list[Any]:
        keys, args, _ = call
        try:
            return [await self._script(keys=list(keys), args=list(args))]
        except Exception as exc:  # this call's own error (NOSCRIPT is handled by redis-py's Script)
            return [exc]

    async def _exchange(self, keys: Sequence[Sequence[str]], args: Sequence[Sequence[Any]],
                        ride_within: float | None = None) -> list[Any]:
        channel = self._channel
        if channel is not None:
            flat_args = [len(keys), len(keys[0]), len(args[0])]
            for one in args:
                flat_args += one
            command = [("EVALSHA", self._each_sha, len(keys) * len(keys[0]), *[k for one in keys for k in one],
                        *flat_args)]
            (reply,) = await (channel.execute(command) if ride_within is None else channel.ride(command, ride_within))
            # The wrapper's own error (NOSCRIPT, say) is every call's.
            return [reply] * len(keys) if isinstance(reply, Exception) else list(reply)
        async with self._redis.pipeline(transaction=False) as pipe:
            for one_keys, one_args in zip(keys, args, strict=True):
                pipe.evalsha(self._sha, len(one_keys), *one_keys, *one_args)
            return list(await pipe.execute(raise_on_error=False))

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def _load(self) -> None:
        # On a Cluster, redis-py sends SCRIPT LOAD to every primary (one batch's keys are on many).
        await self._redis.script_load(self._source)
        if self._channel is not None:
            await self._redis.script_load(self._each)
