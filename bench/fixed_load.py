"""A fixed-count HTTP/1.1 load generator: every body POSTed exactly once, N keep-alive connections.

wrk runs for a duration, not a request count, and an httpx client spends ~3 ms of CPU per request
with these 8 KB answers (it, not the server, was the bottleneck: ~330 req/s against a server
that answers cache hits at ~10,000 req/s under wrk). This speaks just enough HTTP/1.1 to uvicorn
(Content-Length bodies, keep-alive) on uvloop to stay out of the measurement.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Load:
    seconds: float
    latencies_ms: list[float]
    cache: Counter[str]
    non_2xx: int
    statuses: list[str] = field(default_factory=list)  # each request's X-Cache, in latencies_ms's order


def post_all(url: str, bodies: list[bytes], concurrency: int) -> Load:
    """POST each body to ``url`` once, ``concurrency`` at a time, in order of availability."""
    try:
        import uvloop

        return uvloop.run(_drive(url, bodies, concurrency))
    except ImportError:  # plain asyncio is slower but measures the same thing
        return asyncio.run(_drive(url, bodies, concurrency))


def post_at_rate(url: str, bodies: list[bytes], rate: float, concurrency: int) -> Load:
    """POST each body once, the i-th due at i / ``rate`` s: an open loop, as independent users send.

    A latency runs from when the request was due, not from when a free connection sent it, so an
    answer that comes late delays no later measurement (no coordinated omission): a server that
    falls behind shows it in every request that waited, as its users would see it.
    """
    try:
        import uvloop

        return uvloop.run(_drive(url, bodies, concurrency, rate))
    except ImportError:
        return asyncio.run(_drive(url, bodies, concurrency, rate))


async def _drive(url: str, bodies: list[bytes], concurrency: int, rate: float | None = None) -> Load:
    parts = urlsplit(url)
    head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            "Content-Length: ").encode()
    requests = iter(enumerate(bodies))
    load = Load(0.0, [], Counter(), 0)
    first = time.perf_counter() + 0.2  # every connection open before the first request is due

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            for index, body in requests:  # a shared iterator: each body is sent exactly once
                started = time.perf_counter()
                if rate is not None:
                    due = first + index / rate
                    if due > started:
                        await asyncio.sleep(due - started)
                    started = due
                writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
                status, headers = _parse_head(await reader.readuntil(b"\r\n\r\n"))
                await reader.readexactly(int(headers[b"content-length"]))
                load.latencies_ms.append((time.perf_counter() - started) * 1000)
                status_name = headers.get(b"x-cache", b"none").decode()
                load.cache[status_name] += 1
                load.statuses.append(status_name)
                load.non_2xx += not 200 <= status < 300
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    load.seconds = time.perf_counter() - started
    return load


def _parse_head(raw: bytes) -> tuple[int, dict[bytes, bytes]]:
    lines = raw.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name:
            headers[name.strip().lower()] = value.strip()
    if b"content-length" not in headers:
        raise RuntimeError(f"the server answered without Content-Length: {lines[0]!r}")
    return int(lines[0].split()[1]), headers
