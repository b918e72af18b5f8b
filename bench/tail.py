"""Where the W80 tail of issue 12 goes: latency by cache status in the closed loop, and at fixed rates.

    python bench/tail.py                    # ~2 min: 15 s closed loop, then 10 s at each rate
    python bench/tail.py --rates 0.5,0.8    # offered rates as shares of the closed loop's throughput

wrk gives one latency distribution for all answers; this splits it by the X-Cache header. The
server is the peers bench's cache-on modelreg (``peers.serving``: core 0, the MLP 512-4096-4096-16,
cache on, batching 16 / 5 ms); the load comes from this process (``fixed_load``, uvloop) on core 1
with the bench's Redis; bodies are ``stream.lua``'s, ids ``common.stream_ids(..., 0.8)`` (every fifth
request new, the rest Zipf-drawn earlier ids), each phase on ids of its own.

1. Closed loop, 32 connections, as ``wrk -c32``: each connection sends its next request when the
   last is answered. The server is saturated, so by Little's law the mean latency is 32 / throughput
   whatever the server does; what it decides is who waits.
2. Open loop at fixed rates (``fixed_load.post_at_rate``, latency from when a request was due): what
   users who send independently of the answers see at a given share of that throughput.

Writes bench/results/tail.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import ENVS, PEERS, RESULTS, register_modelreg, serving  # noqa: E402

from common import BenchRedis, build_mlp, stream_ids  # noqa: E402
from fixed_load import Load, post_all, post_at_rate  # noqa: E402

WIDTH = 512


def body(k: int) -> bytes:
    """stream.lua's predict body for id ``k``, byte for byte."""
    parts = [f"{k}"] + [f"{((k * 2654435761 + j * 40503) % 10007) / 10007:.4f}" for j in range(2, WIDTH + 1)]
    return ('{"inputs":[[' + ",".join(parts) + "]]}").encode()


def bodies(ids: list[int], offset: int) -> list[bytes]:
    made: dict[int, bytes] = {}
    return [made.setdefault(i, body(i + offset)) for i in ids]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def summary(load: Load) -> dict[str, object]:
    by_status: dict[str, list[float]] = {}
    for latency, status in zip(load.latencies_ms, load.statuses, strict=True):
        by_status.setdefault(status, []).append(latency)
    return {
        "requests": len(load.latencies_ms), "seconds": round(load.seconds, 2),
        "req_per_s": round(len(load.latencies_ms) / load.seconds, 1),
        "mean_ms": round(statistics.fmean(load.latencies_ms), 2),
        "p50_ms": round(percentile(load.latencies_ms, 0.5), 2), "p99_ms": round(percentile(load.latencies_ms, 0.99), 2),
        "non_2xx": load.non_2xx,
        "by_status": {status: {"share": round(len(v) / len(load.latencies_ms), 3),
                               "p50_ms": round(percentile(v, 0.5), 2), "p95_ms": round(percentile(v, 0.95), 2),
                               "p99_ms": round(percentile(v, 0.99), 2)} for status, v in sorted(by_status.items())},
    }


def line(label: str, found: dict[str, object]) -> str:
    statuses = found["by_status"]
    assert isinstance(statuses, dict)
    parts = [f"{s} {v['share']:.0%} p50 {v['p50_ms']:.1f} / p99 {v['p99_ms']:.1f}" for s, v in statuses.items()]
    return (f"{label:>26} | {found['req_per_s']:8,.0f} req/s | mean {found['mean_ms']:6.1f} | "
            f"p50 {found['p50_ms']:6.1f} | p99 {found['p99_ms']:6.1f} ms | " + "; ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15, help="closed loop length (default 15)")
    parser.add_argument("--rate-seconds", type=float, default=10, help="length of each fixed-rate phase")
    parser.add_argument("--rates", default="0.5,0.7,0.9", help="offered rates, shares of the closed loop's req/s")
    parser.add_argument("--out", type=Path, default=RESULTS / "tail.json")
    args = parser.parse_args()
    model = ENVS / "mlp.onnx"
    if not model.exists():
        ENVS.mkdir(parents=True, exist_ok=True)
        build_mlp(model)
    os.sched_setaffinity(0, {1})  # the load beside the bench's Redis, off the server's core
    peer = next(p for p in PEERS if p.key == "on")
    ids = stream_ids(400_000, 0.8, seed=7)
    redis = BenchRedis(core=1)
    results: dict[str, object] = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                  "command": " ".join(["python", "bench/tail.py", *sys.argv[1:]])}
    try:
        with tempfile.TemporaryDirectory(prefix="modelreg-tail-") as work, \
                serving(peer, model, redis, Path(work)) as server:
            register_modelreg(server.url, model)
            url = server.url + peer.path
            post_all(url, bodies([3_300_000] * 200, 0), 32)  # warm: the model loaded, a pass run
            offset = 0
            # About --seconds of requests at the ~4,000 req/s this server answers W80 here.
            closed = post_all(url, bodies(ids[: int(args.seconds * 4000)], offset), 32)
            results["closed_32"] = found = summary(closed)
            print(line("closed loop, 32 conns", found), flush=True)
            capacity = float(found["req_per_s"])  # type: ignore[arg-type]
            for share in (float(s) for s in args.rates.split(",")):
                offset += 1_000_000  # new ids: no phase reads another's answers
                rate = share * capacity
                count = int(rate * args.rate_seconds)
                load = post_at_rate(url, bodies(ids[:count], offset), rate, 64)
                results[f"open_{share:g}"] = found = summary(load) | {"offered_per_s": round(rate, 1)}
                print(line(f"open loop at {share:.0%} ({rate:,.0f}/s)", found), flush=True)
    finally:
        redis.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
