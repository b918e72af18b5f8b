"""`modelreg serve --workers N`: predict throughput of 1 worker against N on this machine (ratio only).

Cache off (the model's TTL is 0), so every request runs the model: this measures how far more
processes get past one event loop and one GIL. A small MLP (512 -> 512 -> 512 -> 16, ONNX), one
intra-op thread per execution, `serve`'s own CPU shares for N > 1. wrk runs on the same machine
and takes CPU of its own, so on 2 cores the ratio is a lower bound of what a separate load
generator would see.

    .venv/bin/python bench/workers_bench.py [--workers 1 2] [--seconds 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import AUTH, ROOT, BenchRedis, build_mlp, free_port, modelreg_env, register, run_wrk, write_ids


def serve(workers: int, data_dir: Path, redis_url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    # Redis only so that every worker is on the replica board (the bench waits for all to load the model).
    env = {**os.environ, **modelreg_env(data_dir, redis_url)}
    process = subprocess.Popen([str(Path(sys.executable).with_name("modelreg")), "serve", "--port", str(port),
                                "--workers", str(workers), "--log-level", "warning"],
                               cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            replicas = httpx.get(f"{url}/admin/replicas", headers=AUTH, timeout=1).json()
            if len(replicas) >= 1:
                return process, url
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"serve --workers {workers} did not start: {log.read_text()[-2000:]}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(workers: int, seconds: int, artifact: Path, ids: Path, out: Path) -> float:
    data = Path(tempfile.mkdtemp(prefix=f"bench-workers{workers}-", dir=out))
    redis = BenchRedis()
    process, url = serve(workers, data, redis.url, out / f"workers-{workers}.log")
    try:
        # No waiting for a batch to fill: the run is bound by CPU, not by the batching delay.
        register(url, "small", artifact, cache_ttl_seconds=0, max_delay_ms=0)
        # Every worker must have loaded the model before the clock starts (the others learn of it by polling).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            replicas = httpx.get(f"{url}/admin/replicas", headers=AUTH, timeout=5).json()
            if len(replicas) == workers and all("small" in r["models"] and r["models"]["small"]["loaded"]
                                                for r in replicas):
                break
            time.sleep(0.3)
        else:
            raise RuntimeError(f"not every worker loaded the model: {replicas}")
        run_wrk(f"{url}/models/small/predict", ids_file=ids, seconds=2, connections=16, cycle=True)  # warm up
        pids = [r["pid"] for r in replicas]
        before = [cpu_seconds(pid) for pid in pids]
        result = run_wrk(f"{url}/models/small/predict", ids_file=ids, seconds=seconds, connections=16, cycle=True)
        assert result.non_2xx == 0, result
        used = [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
        print(f"workers={workers}: {result.requests_per_s:.0f} req/s; CPU seconds per worker over {seconds} s: "
              f"{', '.join(f'{u:.1f}' for u in used)}", flush=True)
        return result.requests_per_s
    finally:
        process.terminate()
        process.wait(timeout=60)
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    artifact = build_mlp(out / "small.onnx", sizes=(512, 512, 512, 16))
    ids = write_ids(out / "ids.txt", list(range(1, 5001)))
    figures: dict[int, list[float]] = {w: [] for w in args.workers}
    for _ in range(args.rounds):  # alternate, so drift on a shared machine hits every setting alike
        for workers in args.workers:
            figures[workers].append(measure(workers, args.seconds, artifact, ids, out))
    base = max(figures[args.workers[0]])
    print(f"cores: {len(os.sched_getaffinity(0))}; cache off; small MLP; wrk -c16 on the same machine")
    for workers, runs in figures.items():
        print(f"workers={workers}: best {max(runs):.0f} req/s (runs {', '.join(f'{r:.0f}' for r in runs)}), "
              f"x{max(runs) / base:.2f}")


if __name__ == "__main__":
    main()
