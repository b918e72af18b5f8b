"""Names the registry does not have: a bounded negative cache and a rate-limited registry re-read for all of them.

A flood of random model names must cost O(1) memory and no SQL per name. A name the registry
lacked at the last read is answered "does not exist" from here for ``ttl`` seconds; a name not
seen before may trigger a re-read (it may have been created on another replica a moment ago), but
all unknown names together get at most ``burst`` re-reads at once and one per ``interval`` after
that (a token bucket): a few first requests for new models are never starved, a flood is one
read a second. The manager's view of the registry is consulted first, so a stale entry here never
hides a model that a poll or an event has since brought in.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_NAMES = 4096  # names of at most 128 characters: well under a MiB
TTL_SECONDS = 5.0
INTERVAL_SECONDS = 1.0
BURST = 5


class UnknownNames:
    """A least-recently-confirmed set of missing names with an expiry, and the re-read token bucket."""

    def __init__(self, *, max_names: int = MAX_NAMES, ttl: float = TTL_SECONDS, interval: float = INTERVAL_SECONDS,
                 burst: int = BURST, clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_names
        self._ttl = ttl
        self._interval = interval
        self._burst = float(burst)
        self._clock = clock
        self._names: OrderedDict[str, float] = OrderedDict()  # name -> when the registry was seen without it
        self._tokens = float(burst)
        self._refilled_at = clock()
        self._lock = threading.Lock()  # requests ask from many threads at once

    def __len__(self) -> int:
        return len(self._names)

    def recently_missing(self, name: str) -> bool:
        """True when the registry lacked ``name`` less than ``ttl`` seconds ago."""
        with self._lock:
            seen = self._names.get(name)
            if seen is None:
                return False
            if self._clock() - seen >= self._ttl:
                del self._names[name]
                return False
            return True

    def may_read(self) -> bool:
        """Take a registry re-read from the bucket; False when it is empty (answer from what is known)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._refilled_at) / self._interval)
            self._refilled_at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True

    def missing(self, name: str) -> None:
        """Note that the registry read just now lacks ``name`` (the oldest entry goes past ``max_names``)."""
        with self._lock:
            self._names[name] = self._clock()
            self._names.move_to_end(name)
            while len(self._names) > self._max:
                self._names.popitem(last=False)
