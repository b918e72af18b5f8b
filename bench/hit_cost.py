"""The cost of one exact-repeat hit through the whole ASGI app (middlewares, fast path, engine), in-process.

    taskset -c 0 python bench/hit_cost.py            # this tree
    taskset -c 0 python bench/hit_cost.py --legacy   # a tree from before the modelreg namespace (imports `api`)

No HTTP server and no wrk: the app is called directly 20,000 times per round, five rounds, and the
median microseconds per hit is printed. Compare two trees by interleaving runs, as ratios.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "t" * 20
BODY = b'{"inputs": [[1.0, 2.0, 3.0]]}'


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--legacy", action="store_true", help="the pre-namespace layout (api.app)")
    parser.add_argument("--hits", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one round (top 22)")
    args = parser.parse_args()
    if args.legacy:
        from api.app import create_app  # type: ignore[import-not-found]
        from api.settings import Settings  # type: ignore[import-not-found]
    else:
        from modelreg.api.app import create_app
        from modelreg.api.settings import Settings
    work = Path(tempfile.mkdtemp(prefix="modelreg-hit-"))
    model = work / "tiny.onnx"
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_tiny_onnx.py"), "--scale", "2", str(model)],
                   check=True, capture_output=True)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(create_app(Settings(data_dir=work / "data", admin_token=TOKEN, plugins="onnx"))) as client:
        assert client.post("/admin/models", json={"name": "m", "runtime": "onnx"}, headers=auth).status_code == 201
        client.post("/admin/models/m/versions", files={"artifact": ("m.onnx", model.read_bytes())}, headers=auth)
        assert client.post("/admin/models/m/promote", json={"version": 1}, headers=auth).status_code == 200
        client.post("/models/m/predict", content=BODY)
        assert client.post("/models/m/predict", content=BODY).headers["x-cache"] == "hit"
        app = client.app

        async def rounds() -> list[float]:
            message = {"type": "http.request", "body": BODY, "more_body": False}

            async def receive() -> dict[str, Any]:
                return message

            async def send(_: dict[str, Any]) -> None:
                pass

            async def run(n: int) -> float:
                start = time.perf_counter()
                for _ in range(n):
                    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                             "scheme": "http", "path": "/models/m/predict", "raw_path": b"/models/m/predict",
                             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
                             "server": ("127.0.0.1", 80), "app": app,
                             "headers": [(b"host", b"x"), (b"content-type", b"application/json"),
                                         (b"content-length", str(len(BODY)).encode())]}
                    await app(scope, receive, send)
                return (time.perf_counter() - start) / n * 1e6

            await run(3000)
            if args.profile:
                import cProfile
                import pstats
                profiler = cProfile.Profile()
                profiler.enable()
                await run(args.hits)
                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(22)
            return sorted([await run(args.hits) for _ in range(5)])

        results = client.portal.call(rounds)
    print(f"median µs/hit {results[2]:.2f}  (rounds: {', '.join(f'{r:.1f}' for r in results)})")


if __name__ == "__main__":
    main()
