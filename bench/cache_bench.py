"""Issue 4's cache figures, side by side in one run: the hit path against a bare FastAPI ceiling
(with and without the first level), and compute saved on an 80%-repeat stream (cache on/off).

    python bench/cache_bench.py [--seconds 10] [--out bench/out]

Server pinned to core 0; wrk and the bench's Redis on core 1.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import (
    BenchRedis,
    WrkResult,
    build_mlp,
    distinct_in_prefix,
    modelreg_env,
    register,
    run_wrk,
    start_server,
    stream_ids,
    write_ids,
)


def measure(url: str, path: str, ids_file: Path, seconds: int, connections: int) -> WrkResult:
    run_wrk(url + path, ids_file=ids_file, seconds=2, connections=connections, cycle=True)  # warm-up
    return run_wrk(url + path, ids_file=ids_file, seconds=seconds, connections=connections, cycle=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="modelreg-bench-"))
    mlp = build_mlp(work / "mlp.onnx")
    one = write_ids(work / "w100.txt", [1] * 10)
    rows: list[tuple[str, WrkResult, str]] = []

    bare = start_server("bare_app:create_app", {"PYTHONPATH": str(Path(__file__).parent)})
    try:
        ceiling = measure(bare.url, "/models/bare/predict", one, args.seconds, 64)
    finally:
        bare.stop()
    rows.append(("W100 bare FastAPI constant (ceiling)", ceiling, "1.00x"))

    redis = BenchRedis(core=1)
    try:
        for label, l1 in (("W100 hits, first level + Redis", "67108864"), ("W100 hits, Redis only", "0")):
            server = start_server("modelreg.api.app:create_app", modelreg_env(work / f"data-{l1}", redis.url,
                                                                   MODELREG_FIRST_LEVEL_BYTES=l1))
            try:
                register(server.url, "mlp", mlp)
                result = measure(server.url, "/models/mlp/predict", one, args.seconds, 64)
            finally:
                server.stop()
            rows.append((label, result, f"{result.requests_per_s / ceiling.requests_per_s:.2f}x"))

        ids = stream_ids(200_000, 0.8, seed=1)
        w80 = write_ids(work / "w80.txt", ids)
        server = start_server("modelreg.api.app:create_app", modelreg_env(work / "data-w80", redis.url))
        try:
            # The cache's own effect: batching off on both sides (issue 5's bench adds batching).
            register(server.url, "mlp", mlp, max_batch_size=1)
            register(server.url, "mlp-nocache", mlp, cache_ttl_seconds=0, max_batch_size=1)
            off = run_wrk(server.url + "/models/mlp-nocache/predict", ids_file=w80, seconds=args.seconds,
                          connections=16)
            on = run_wrk(server.url + "/models/mlp/predict", ids_file=w80, seconds=args.seconds, connections=16)
        finally:
            server.stop()
        for label, result in (("W80 cache off (ttl 0), unbatched", off), ("W80 cache on, unbatched", on)):
            executions = result.extra.get("miss", 0) + result.extra.get("bypass", 0)
            distinct = distinct_in_prefix(ids, result.requests)
            rows.append((label, result, f"{result.requests_per_s / off.requests_per_s:.2f}x vs off; "
                                        f"executions {executions} / distinct {distinct}"))
    finally:
        redis.stop()

    lines = [f"{'workload':40} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}  ratio",
             "-" * 100]
    for label, r, ratio in rows:
        lines.append(f"{label:40} {r.requests_per_s:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.non_2xx:8d}  {ratio}")
    table = "\n".join(lines)
    print(table)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"cache-{stamp}.txt").write_text(table + "\n")
    (args.out / f"cache-{stamp}.json").write_text(json.dumps(
        [{"workload": label, **r.__dict__, "ratio": ratio} for label, r, ratio in rows], indent=2))


if __name__ == "__main__":
    main()
