"""Issue 5's figures in one run: workloads W0 / W80 / W100 x modes cache+batching, cache only,
batching only, neither, and a bare FastAPI constant endpoint (the ceiling). Prints a table and
writes a PNG chart and JSON.

    python bench/serving_bench.py [--seconds 10] [--connections 32] [--out bench/out]

The server (one uvicorn worker, httptools + uvloop) is pinned to core 0 and runs the benchmark
MLP (float32 [batch,512] -> 4096 -> 4096 -> 16, ONNX Runtime, one intra-op thread); wrk and the
bench's own Redis share core 1. Every mode is its own model on the same server, each with its
own policy, so the modes see the same process, the same Redis and the same request bodies.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common import (
    BenchRedis,
    WrkResult,
    build_mlp,
    distinct_in_prefix,
    modelreg_env,
    modes,
    register,
    run_wrk,
    start_server,
    stream_ids,
    write_ids,
)

MODES = modes(max_batch_size=16)
STREAM_LENGTH = 150_000  # longer than any run: a stream is never replayed
# Ids are offset per (mode, workload) so no cell reads another's cached answers (stream.lua puts
# the id itself in the body); its hash of k * 2654435761 stays exact in LuaJIT's doubles below ~3.4M.
OFFSET = 160_000


@dataclass
class Cell:
    workload: str
    mode: str
    result: WrkResult
    executions: int | None
    distinct: int | None


def _model(mode: str) -> str:
    return "mlp-" + mode.replace("+", "-").replace(" ", "-")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--workloads", default="W0,W80,W100")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="modelreg-bench-"))
    mlp = build_mlp(work / "mlp.onnx")
    # Each mode gets its own id range (offset), so one mode's cached answers never serve another.
    streams = {
        "W0": list(range(1, STREAM_LENGTH + 1)),
        "W80": stream_ids(STREAM_LENGTH, 0.8, seed=1),
        "W100": [1] * 1000,
    }
    workloads = [w for w in args.workloads.split(",") if w]
    cells: list[Cell] = []

    bare = start_server("bare_app:create_app", {"PYTHONPATH": str(Path(__file__).parent)})
    try:
        one = write_ids(work / "bare.txt", [1] * 1000)
        run_wrk(bare.url + "/models/bare/predict", ids_file=one, seconds=2, connections=args.connections, cycle=True)
        ceiling = run_wrk(bare.url + "/models/bare/predict", ids_file=one, seconds=args.seconds,
                          connections=args.connections, cycle=True)
    finally:
        bare.stop()
    cells.append(Cell("W100", "bare FastAPI", ceiling, None, None))

    redis = BenchRedis(core=1)
    server = start_server("modelreg.api.app:create_app", modelreg_env(work / "data", redis.url),
                          log=work / "server.log")
    try:
        for mode, policy in MODES.items():
            register(server.url, _model(mode), mlp, **policy)
        for index, mode in enumerate(MODES):
            url = f"{server.url}/models/{_model(mode)}/predict"
            warm = write_ids(work / f"warm-{index}.txt", [OFFSET * 20 + index] * 50)
            run_wrk(url, ids_file=warm, seconds=1, connections=4, cycle=True)  # load, JIT, first level
            for w_index, workload in enumerate(workloads):
                offset = OFFSET * (index * len(workloads) + w_index)
                ids = [i + offset for i in streams[workload]]
                ids_file = write_ids(work / f"{workload}-{index}.txt", ids)
                result = run_wrk(url, ids_file=ids_file, seconds=args.seconds, connections=args.connections,
                                 cycle=workload == "W100")
                executions = result.extra.get("miss", 0) + result.extra.get("bypass", 0)
                distinct = distinct_in_prefix(ids, result.requests) if workload != "W100" else 1
                cells.append(Cell(workload, mode, result, executions, distinct))
                print(f"{workload:5} {mode:16} {result.requests_per_s:8.0f} req/s  p99 {result.p99_ms:7.2f} ms",
                      flush=True)
    finally:
        server.stop()
        redis.stop()

    table = _table(cells, ceiling)
    print(table)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"serving-{stamp}.txt").write_text(table + "\n")
    (args.out / f"serving-{stamp}.json").write_text(json.dumps([{**asdict(c)} for c in cells], indent=2))
    _chart(cells, args.out / f"serving-{stamp}.png")
    print(f"wrote {args.out}/serving-{stamp}.{{txt,json,png}}")


def _find(cells: list[Cell], workload: str, mode: str) -> Cell | None:
    return next((c for c in cells if c.workload == workload and c.mode == mode), None)


def _table(cells: list[Cell], ceiling: WrkResult) -> str:
    lines = [f"{'workload':8} {'mode':16} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} "
             f"{'executions':>10} {'distinct':>9}", "-" * 84]
    for c in cells:
        executions = "" if c.executions is None else str(c.executions)
        distinct = "" if c.distinct is None else str(c.distinct)
        lines.append(f"{c.workload:8} {c.mode:16} {c.result.requests_per_s:8.0f} {c.result.p50_ms:8.2f} "
                     f"{c.result.p99_ms:8.2f} {c.result.non_2xx:8d} {executions:>10} {distinct:>9}")
    lines.append("")
    goals = [
        ("W0 batching / W0 neither (goal >= 3x)", "W0", "batching only", "W0", "neither"),
        ("W0 cache+batching / W0 neither", "W0", "cache+batching", "W0", "neither"),
        ("W80 cache+batching / W80 neither (goal >= 10x)", "W80", "cache+batching", "W80", "neither"),
        ("W80 cache only / W80 neither", "W80", "cache only", "W80", "neither"),
    ]
    for label, w1, m1, w2, m2 in goals:
        a, b = _find(cells, w1, m1), _find(cells, w2, m2)
        if a and b and b.result.requests_per_s:
            lines.append(f"{label:52} {a.result.requests_per_s / b.result.requests_per_s:6.2f}x")
    hit = _find(cells, "W100", "cache+batching")
    if hit:
        lines.append(f"{'W100 cache+batching / bare ceiling (goal >= 0.8x)':52} "
                     f"{hit.result.requests_per_s / ceiling.requests_per_s:6.2f}x")
    w0 = _find(cells, "W0", "cache+batching")
    if w0:
        lines.append(f"{'W0 cache+batching req/s (goal >= 700)':52} {w0.result.requests_per_s:6.0f}")
    return "\n".join(lines)


def _chart(cells: list[Cell], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'); no chart written")
        return
    workloads = sorted({c.workload for c in cells}, key=lambda w: int(w[1:]))
    modes = [*MODES, "bare FastAPI"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        xs, rps, p99 = [], [], []
        for j, workload in enumerate(workloads):
            cell = _find(cells, workload, mode)
            if cell:
                xs.append(j + i * width)
                rps.append(cell.result.requests_per_s)
                p99.append(cell.result.p99_ms)
        left.bar(xs, rps, width, label=mode)
        right.bar(xs, p99, width, label=mode)
    for axis, title, unit in ((left, "Throughput", "requests/s (log)"), (right, "p99 latency", "ms (log)")):
        axis.set_xticks([j + 0.4 - width / 2 for j in range(len(workloads))], workloads)
        axis.set_yscale("log")
        axis.set_ylabel(unit)
        axis.set_title(title)
    left.legend(fontsize=8)
    fig.suptitle("modelreg, MLP 512-4096-4096-16 (ONNX, 1 thread), server on one core, wrk on the other")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
