"""What a miss pays for the cache: CPU per all-distinct request through the whole ASGI app, cache on
against cache off (TTL 0), in-process, with a real Redis.

    taskset -c 0 python bench/miss_cost.py                     # a small MLP, 32 concurrent clients
    taskset -c 0 python bench/miss_cost.py --profile on        # + cProfile of the cache-on rounds (top 25)
    taskset -c 0 python bench/miss_cost.py --profile v2 --profile-out /tmp/v2.pstats   # + the pstats, to diff
    taskset -c 0 python bench/miss_cost.py --mlp issue --requests 2000 --rounds 9   # issue 12's MLP: the goal's ratio

No HTTP server and no wrk: 32 coroutines call the app directly, each body 512 floats that no other
request repeats, on two models alike but for the cache (both batched 16 / 5 ms, as the default),
and on the cache-on model by the V2 route (``/v2/models/on/infer``, the same floats in an Open
Inference Protocol body): the V2 row against the cache-on row is the V2 W0 goal's ratio.
The model is small (512 -> 64 -> 16) so what is not the model shows: the difference between the two
rows is what the cache costs a miss. ``--mlp issue`` serves issue 12's MLP (512 -> 4096 -> 4096 -> 16,
76 MB) instead, so the ratio of the two rows is the W0 goal's (cache on / cache off >= 0.95x) in CPU
per request, without HTTP or wrk (both would add the same to each row). Rounds alternate between
the three; medians of five rounds (``--rounds``).
The bench's Redis is its own (core 1).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BenchRedis, build_mlp  # noqa: E402

TOKEN = "t" * 20
CLIENTS = 32


def body(i: int) -> bytes:
    return orjson.dumps({"inputs": [[float(i)] + [0.5] * 511]})


def v2_body(i: int) -> bytes:
    return orjson.dumps({"inputs": [{"name": "x", "shape": [1, 512], "datatype": "FP32",
                                     "data": [float(i)] + [0.5] * 511}]})


# Round name -> (path, body): the cache-on model, the cache-off model, the cache-on model by V2.
ROUTES = {"on": ("/models/on/predict", body), "off": ("/models/off/predict", body),
          "v2": ("/v2/models/on/infer", v2_body)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000, help="per round and model")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", choices=list(ROUTES), help="cProfile the rounds of one route")
    parser.add_argument("--profile-out", type=Path,
                        help="also write the profile's pstats there (two routes' files diff with pstats)")
    parser.add_argument("--mlp", choices=["small", "issue"], default="small",
                        help="small: 512-64-16 (what is not the model shows); issue: issue 12's 512-4096-4096-16")
    args = parser.parse_args()
    from modelreg.api.app import create_app
    from modelreg.api.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="modelreg-miss-"))
    sizes = (512, 64, 16) if args.mlp == "small" else (512, 4096, 4096, 16)
    model = build_mlp(work / f"{args.mlp}.onnx", sizes=sizes)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    redis = BenchRedis()
    try:
        settings = Settings(data_dir=work / "data", admin_token=TOKEN, plugins="onnx", redis_url=redis.url)
        with TestClient(create_app(settings)) as client:
            for name, policy in {"on": {}, "off": {"cache_ttl_seconds": 0}}.items():
                client.post("/admin/models", json={"name": name, "runtime": "onnx", **policy},
                            headers=auth).raise_for_status()
                client.post(f"/admin/models/{name}/versions", files={"artifact": ("m.onnx", model.read_bytes())},
                            headers=auth).raise_for_status()
                client.post(f"/admin/models/{name}/promote", json={"version": 1}, headers=auth).raise_for_status()
            app = client.app
            counter = iter(range(10**9))

            async def one(name: str) -> None:
                path, make = ROUTES[name]
                data = make(next(counter))
                message = {"type": "http.request", "body": data, "more_body": False}
                status: list[int] = []

                async def receive() -> dict[str, Any]:
                    return message

                async def send(m: dict[str, Any]) -> None:
                    if m["type"] == "http.response.start":
                        status.append(m["status"])

                scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                         "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                         "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "app": app,
                         "headers": [(b"host", b"x"), (b"content-type", b"application/json"),
                                     (b"content-length", str(len(data)).encode())]}
                await app(scope, receive, send)
                assert status == [200], status

            async def round_(name: str, n: int) -> float:
                remaining = iter(range(n))

                async def client_loop() -> None:
                    for _ in remaining:
                        await one(name)

                cpu = time.process_time()
                await asyncio.gather(*(client_loop() for _ in range(CLIENTS)))
                return (time.process_time() - cpu) / n * 1e6

            async def rounds() -> dict[str, list[float]]:
                for name in ROUTES:
                    await round_(name, 500)
                seen: dict[str, list[float]] = {name: [] for name in ROUTES}
                profiler = cProfile.Profile() if args.profile else None
                for _ in range(args.rounds):
                    for name in ROUTES:
                        if profiler is not None and name == args.profile:
                            profiler.enable()
                        seen[name].append(await round_(name, args.requests))
                        if profiler is not None and name == args.profile:
                            profiler.disable()
                if profiler is not None:
                    if args.profile_out is not None:
                        profiler.dump_stats(args.profile_out)
                    out = io.StringIO()
                    stats = pstats.Stats(profiler, stream=out).sort_stats("tottime")
                    stats.print_stats(25)
                    stats.print_callers("wait_for|create_task|connection.py:815")
                    print(out.getvalue())
                return seen

            seen = client.portal.call(rounds)
    finally:
        redis.stop()
    on, off, v2 = (sorted(seen[n])[len(seen[n]) // 2] for n in ROUTES)
    print(f"CPU µs per all-distinct request: cache on {on:.0f}, cache off {off:.0f}, V2 cache on {v2:.0f}; "
          f"the cache costs a miss {on - off:.0f} µs ({on / off:.2f}x); "
          f"throughput on / off {off / on:.3f}x, V2 / predict {on / v2:.3f}x "
          f"(model {args.mlp}, medians of {args.rounds} rounds)")


if __name__ == "__main__":
    main()
