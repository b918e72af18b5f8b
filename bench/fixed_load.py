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
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Load:
    seconds: float
    latencies_ms: list[float]
    cache: Counter[str]
    non_2xx: int


def post_all(url: str, bodies: list[bytes], concurrency: int) -> Load:
    """POST each body to ``url`` once, ``concurrency`` at a time, in order of availability."""
    try:
        import uvloop

        return uvloop.run(_drive(url, bodies, concurrency))
    except ImportError:  # plain asyncio is slower but measures the same thing
        return asyncio.run(_drive(url, bodies, concurrency))


async def _drive(url: str, bodies: list[bytes], concurrency: int) -> Load:
    parts = urlsplit(url)
    head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            "Content-Length: ").encode()
    requests = iter(bodies)
    load = Load(0.0, [], Counter(), 0)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            for body in requests:  # a shared iterator: each body is sent exactly once
                started = time.perf_counter()
                writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
                status, headers = _parse_head(await reader.readuntil(b"\r\n\r\n"))
                await reader.readexactly(int(headers[b"content-length"]))
                load.latencies_ms.append((time.perf_counter() - started) * 1000)
                load.cache[headers.get(b"x-cache", b"none").decode()] += 1
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
