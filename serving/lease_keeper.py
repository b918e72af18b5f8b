"""Keeps this replica's leases alive while their computations run: one loop for them all.

A lease (``PredictionCache``) lives ``lease_ms`` unless renewed, and must live as long as the work
it stands for. A task per held lease (with its event and timer) would cost every miss ~20 µs of
the event loop even though most computations end long before their first renewal; one loop that
wakes every third of a lease and renews only the leases held for more than a sixth costs a miss a
dict insert and a dict delete. A lease is then renewed at most every third of its length and
never left more than half of it without a renewal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from modelreg.serving.tasks import cancel_and_wait


class LeaseKeeper:
    """The leases this replica holds, renewed by ``renew(name, token)`` until released.

    ``renew`` answers True (renewed), False (another replica holds the lease now: this one stalled
    past it and was taken over; it stops claiming it and ``on_lost`` is called) or anything else
    (Redis did not answer: tried again on the next turn; past the lease a waiter takes over).
    """

    def __init__(self, lease_ms: int, renew: Callable[[str, str], Awaitable[object]],
                 on_lost: Callable[[str], None]) -> None:
        self._every = lease_ms / 3000
        self._renew = renew
        self._on_lost = on_lost
        self._held: dict[str, tuple[str, float]] = {}  # lease name -> (token, last taken or renewed)
        self._task: asyncio.Task[None] | None = None

    def __bool__(self) -> bool:
        return bool(self._held)

    def hold(self, name: str, token: str) -> None:
        """Keep ``name`` (taken with ``token`` just now) alive until ``release``."""
        loop = asyncio.get_running_loop()
        self._held[name] = (token, loop.time())
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="modelreg-lease-keeper")

    def release(self, name: str, token: str) -> None:
        """Stop renewing ``name`` (its computation ended); another token's hold on it is left alone."""
        held = self._held.get(name)
        if held is not None and held[0] == token:
            del self._held[name]

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._held:
            await asyncio.sleep(self._every)
            now = loop.time()
            due = [(name, token) for name, (token, since) in self._held.items() if now - since >= self._every / 2]
            if not due:
                continue
            answers = await asyncio.gather(*(self._renew(name, token) for name, token in due))
            for (name, token), answer in zip(due, answers, strict=True):
                if self._held.get(name, (None,))[0] != token:
                    continue  # released while the renewal was in flight
                if answer is True:
                    self._held[name] = (token, now)
                elif answer is False:
                    del self._held[name]
                    self._on_lost(name)
