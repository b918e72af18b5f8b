"""Issue 16's figures: one replica's RSS against its configured cache budgets under a long stream
of distinct inputs (each asked twice), with Redis and on the embedded default, sampled over time. Prints a table and
writes a PNG chart and JSON.

    python bench/memory_bench.py [--seconds 60] [--first-level-mib 16] [--embedded-mib 16] [--out bench/out]

Three cases, each its own server (one uvicorn worker, pinned to core 0, the benchmark MLP with
cache + batching) and, with Redis, its own redis-server (core 1, beside wrk):

- ``redis``: Redis plus the first level (``MODELREG_FIRST_LEVEL_BYTES``); budget = the first level.
- ``embedded``: no Redis; the first level plus the in-process store (``MODELREG_EMBEDDED_CACHE_BYTES``).
- ``no first level``: Redis and nothing held in process (``MODELREG_FIRST_LEVEL_BYTES=0``): what a
  replica grows by under this load with no budget at all, the overhead the goal allows for.

Every input is new and asked twice in a row (stream.lua over ids 1, 1, 2, 2, ...: a value this
replica computed enters the first level on its first repeat), so every answer is stored and the
budgets fill and then evict. The growth is RSS minus RSS after the model is loaded and a short
warm-up; the goal is growth <= 1.25 x the budgets + OVERHEAD_MIB, flat once full.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common import BenchRedis, WrkResult, build_mlp, modelreg_env, register, run_wrk, start_server, write_ids

MiB = 1024 * 1024
# The fixed overhead the goal allows beside the budgets: the pending-write map's cap (8 MiB, reached
# only when Redis is slower than the misses come), the allocator's arenas and connection buffers.
OVERHEAD_MIB = 16
STREAM_LENGTH = 400_000  # longer than any run: a stream is never replayed
WARM_IDS = range(3_000_001, 3_002_001)  # apart from the stream's ids (stream.lua's hash is exact below ~3.4M)


@dataclass
class Case:
    name: str
    redis: bool
    first_level_mib: int
    embedded_mib: int | None  # None: not on the embedded default
    idle_mib: float = 0.0  # RSS of the started server, before any model is loaded
    loaded_mib: float = 0.0  # after the model is registered, loaded and validated
    baseline_mib: float = 0.0  # after a short warm-up of requests: what the growth is measured from
    samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds, RSS MiB)
    result: WrkResult | None = None

    @property
    def budget_mib(self) -> int:
        return self.first_level_mib + (self.embedded_mib or 0)

    @property
    def limit_mib(self) -> float:
        return 1.25 * self.budget_mib + OVERHEAD_MIB

    def growth(self, at: float | None = None) -> float:
        """Growth over the warm baseline, at the last sample at or before ``at`` (default: the peak)."""
        if at is None:
            return max(rss for _, rss in self.samples) - self.baseline_mib
        return [rss for t, rss in self.samples if t <= at][-1] - self.baseline_mib


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def run_case(case: Case, mlp: Path, ids: Path, warm: Path, work: Path, seconds: int, connections: int,
             interval: float) -> None:
    redis = BenchRedis() if case.redis else None
    extra = {"MODELREG_FIRST_LEVEL_BYTES": str(case.first_level_mib * MiB)}
    if case.embedded_mib is not None:
        extra["MODELREG_EMBEDDED_CACHE_BYTES"] = str(case.embedded_mib * MiB)
    data = work / case.name.replace(" ", "-")
    server = start_server("modelreg.api.app:create_app", modelreg_env(data, redis.url if redis else None, **extra),
                          log=work / f"{data.name}.log")
    try:
        time.sleep(1)
        case.idle_mib = rss_mib(server.process.pid)
        register(server.url, "mlp", mlp, max_batch_size=16, max_delay_ms=2)
        time.sleep(1)
        case.loaded_mib = rss_mib(server.process.pid)
        run_wrk(server.url + "/models/mlp/predict", ids_file=warm, seconds=2, connections=connections, cycle=True)
        time.sleep(1)
        case.baseline_mib = rss_mib(server.process.pid)
        done: list[WrkResult] = []
        load = threading.Thread(target=lambda: done.append(run_wrk(
            server.url + "/models/mlp/predict", ids_file=ids, seconds=seconds, connections=connections)))
        start = time.monotonic()
        load.start()
        while load.is_alive():
            case.samples.append((time.monotonic() - start, rss_mib(server.process.pid)))
            load.join(interval)
        case.samples.append((time.monotonic() - start, rss_mib(server.process.pid)))
        case.result = done[0] if done else None
    finally:
        server.stop()
        if redis is not None:
            redis.stop()


def table(cases: list[Case], seconds: int) -> str:
    marks = [seconds * f for f in (0.1, 0.25, 0.5, 0.75, 1.0)]
    head = ["case", "budget MiB", "limit MiB", "req/s", "requests", "idle", "model", "warm",
            *[f"+{m:.0f}s" for m in marks], "peak", "last half"]
    rows = [head]
    for c in cases:
        rps = f"{c.result.requests_per_s:.0f}" if c.result else "-"
        total = str(c.result.requests) if c.result else "-"
        half = c.growth(seconds) - c.growth(seconds / 2)
        rows.append([c.name, str(c.budget_mib), f"{c.limit_mib:.0f}", rps, total, f"{c.idle_mib:.0f}",
                     f"{c.loaded_mib:.0f}", f"{c.baseline_mib:.0f}",
                     *[f"{c.growth(m):+.1f}" for m in marks], f"{c.growth():+.1f}", f"{half:+.1f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("RSS in MiB: idle = started server, model = the MLP loaded, warm = after a 2 s warm-up (the growth's "
                 "zero); +Ns = growth after N s of distinct inputs; last half = growth over the run's second half")
    return "\n".join(lines)


def chart(cases: list[Case], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'); no chart written")
        return
    fig, axis = plt.subplots(figsize=(9, 5))
    for i, c in enumerate(cases):
        color = f"C{i}"
        axis.plot([t for t, _ in c.samples], [r - c.baseline_mib for _, r in c.samples], color=color,
                  label=f"{c.name} (budgets {c.budget_mib} MiB)")
        axis.axhline(c.limit_mib, color=color, linestyle=":", linewidth=1)
    axis.set_xlabel("seconds of distinct inputs, each asked twice")
    axis.set_ylabel("RSS growth over the warm server, MiB")
    axis.set_title(f"modelreg, one replica, MLP 512-4096-4096-16; dotted: 1.25 x budgets + {OVERHEAD_MIB} MiB")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--first-level-mib", type=int, default=16)
    parser.add_argument("--embedded-mib", type=int, default=16)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between RSS samples")
    parser.add_argument("--cases", default="redis,embedded,no first level")
    parser.add_argument("--label", default="", help="added to the output file names (say, before)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="modelreg-memory-bench-"))
    mlp = build_mlp(work / "mlp.onnx")
    ids = write_ids(work / "stream.ids", [i for i in range(1, STREAM_LENGTH // 2 + 1) for _ in (0, 1)])
    warm = write_ids(work / "warm.ids", list(WARM_IDS))
    known = {"redis": Case("redis", True, args.first_level_mib, None),
             "embedded": Case("embedded", False, args.first_level_mib, args.embedded_mib),
             "no first level": Case("no first level", True, 0, None)}
    cases = [known[name.strip()] for name in args.cases.split(",")]
    for case in cases:
        print(f"{case.name}: {args.seconds}s of distinct inputs ...", flush=True)
        run_case(case, mlp, ids, warm, work, args.seconds, args.connections, args.interval)
    print(table(cases, args.seconds))
    for c in cases:
        verdict = "within" if c.growth() <= c.limit_mib else "OVER"
        print(f"{c.name}: peak growth {c.growth():.1f} MiB, {verdict} the goal of {c.limit_mib:.0f} MiB "
              f"(1.25 x {c.budget_mib} + {OVERHEAD_MIB})")
    suffix = f"-{args.label}" if args.label else ""
    (args.out / f"memory{suffix}.json").write_text(json.dumps([asdict(c) for c in cases], indent=2))
    chart(cases, args.out / f"memory{suffix}.png")
    print(f"wrote {args.out / f'memory{suffix}.json'} and the chart beside it")


if __name__ == "__main__":
    main()
