"""What the cache costs a miss, in instructions: a count that the machine's drift does not move.

    python bench/miss_instructions.py                 # ~1.5 min: 1,600 misses each way under callgrind
    python bench/miss_instructions.py --misses 3200   # steadier (twice as long)
    PYTHONPATH=/path/to/other/checkout python bench/miss_instructions.py   # the same count for another tree

``PredictionCache.get_or_compute`` on all-distinct keys, 16 concurrent per loop turn (a batch's
worth, as W0 sends them), on uvloop as the server runs, with a Redis of the bench's own; the
computation answers a loop turn later, as the batcher does. The same run is done twice under
valgrind's callgrind, once with the cache on (TTL 60 s, the first level on) and once bypassing it
(TTL 0); the difference of the two programs' instruction totals over the number of misses is what
the cache adds to a miss: the Redis round trip's Python and hiredis, the single flight, the lease,
the first-level put, the write-back. Start-up and warm-up are the same in both runs and cancel out.

Wall-clock benches (``miss_cost.py``) read the same code 25-45 µs a miss from one run to the next
on this shared machine; this count moves by a few per cent, so a change of 10 % shows in one run.
Instructions are not time (a cache miss in the CPU costs hundreds), so confirm a gain in
``miss_cost.py`` and ``peers.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
VALUE = b'{"outputs":{"y":[[' + b"0.123456," * 15 + b"0.5]]}}"  # a canonical entry's size: 16 floats
BATCH = 16


async def misses(url: str, mode: str, n: int) -> None:
    """``n`` misses through the cache (``mode`` on) or around it (off), after a warm-up of both."""
    from modelreg.serving.breaker import CircuitBreaker
    from modelreg.serving.cache import PredictionCache, make_redis
    from modelreg.serving.first_level import FirstLevel

    cache = PredictionCache(make_redis(url), breaker=CircuitBreaker(), first_level=FirstLevel())
    loop = asyncio.get_running_loop()
    start = time.time_ns()  # keys of their own: the bench's Redis is fresh, but warm-ups must not hit
    counter = iter(range(start, start + 10**12))

    async def compute() -> bytes:
        answer: asyncio.Future[bytes] = loop.create_future()
        loop.call_soon(answer.set_result, VALUE)
        return await answer

    async def one(ttl: int) -> None:
        await cache.get_or_compute(f"bench:p:m:g1:v1:abcdefabcdef:{{{next(counter):032x}}}", compute,
                                   ttl_seconds=ttl)

    async def batches(ttl: int, count: int) -> None:
        for _ in range(count // BATCH):
            await asyncio.gather(*(one(ttl) for _ in range(BATCH)))
        await cache.drain()

    await batches(60, 320)
    await batches(0, 320)
    await batches(60 if mode == "on" else 0, n)
    await cache.close()


def counted(mode: str, n: int, url: str) -> int:
    """The instructions of one whole run of this script in ``mode``, by callgrind."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        # One hash seed: str hashes (and so dict layouts and probe lengths) alike in every run.
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "-q", sys.executable,
                        __file__, "--run", mode, "--misses", str(n), "--redis", url], check=True,
                       stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONHASHSEED": "0"})
        summary = re.search(r"^summary:\s+(\d+)", out.read_text(), re.M)
        if summary is None:
            raise RuntimeError(f"no summary line in {out}")
        return int(summary.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--misses", type=int, default=1600)
    parser.add_argument("--run", choices=["on", "off"], help=argparse.SUPPRESS)  # the child under valgrind
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop

    if args.run:
        uvloop.run(misses(args.redis, args.run, args.misses))
        return
    from common import BenchRedis

    redis = BenchRedis()
    try:
        on, off = (counted(mode, args.misses, redis.url) for mode in ("on", "off"))
    finally:
        redis.stop()
    print(f"the cache adds {(on - off) / args.misses:,.0f} instructions to a miss "
          f"({args.misses:,} misses, {BATCH} a loop turn; whole runs: on {on:,}, off {off:,})")


if __name__ == "__main__":
    main()
