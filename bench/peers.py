"""Issue 12's table in one run: modelreg against the peers, each server on one core, wrk on the other.

    python bench/peers.py --pairs 6             # the full run (~20 min): 15 s a cell, one run, 6 sets of rounds
    python bench/peers.py --seconds 3 --servers bare,ort,on,off      # a quick look at a subset

Builds what it needs in bench/.envs/ (git-ignored) on first use and reuses it after: a virtualenv
each for LitServe and Seldon MLServer 1.7.1, one for the plain FastAPI peers (bare constant, ONNX
Runtime without cache, the usual Redis cache) and the chart (matplotlib), all with ONNX Runtime and
no torch; the MLP 512 -> 4096 -> 4096 -> 16 (76 MB fp32 ONNX, built with onnx.helper). Every server
runs under ``taskset -c 0`` (one process where the server allows it, ONNX Runtime with one intra-op
thread), wrk (``-t1 -c32``) and the bench's Redis under ``taskset -c 1``. Bodies are JSON with 512
floats made from an id by ``stream.lua``; the id streams are written to bench/.envs/streams/:
W0 all distinct, W80 80 % repeats of earlier inputs at every point, W100 one input. Each server
gets its own id range, so no server reads another cell's answers.

Then ``--pairs`` sets of alternating rounds (``PAIRED_ROUNDS``) on the cache-on server, with the bare
ceiling and the plain FastAPI + ONNX Runtime server started beside it: cells minutes apart compare
the machine's speed (it drifts by ±30 % over minutes here) as much as the servers, rounds seconds
apart compare the servers. Each goal that divides two servers or routes is reported both ways.

Writes bench/results/peers.md (the table and the goals, also printed), peers.json and peers.png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import venv
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import httpx

from common import (
    ROOT,
    BenchRedis,
    WrkResult,
    build_mlp,
    free_port,
    modelreg_env,
    process_cpu_seconds,
    register,
    run_wrk,
    stream_ids,
    write_ids,
)

BENCH = Path(__file__).resolve().parent
ENVS = BENCH / ".envs"
APPS = BENCH / "peer_apps"
RESULTS = BENCH / "results"
CONSTRAINTS = ROOT / "constraints.txt"  # torch==2.13.0 (CPU), should anything pull torch in
# Each peer environment: what pip installs into it. No torch anywhere (none of them needs it).
ENV_PACKAGES: dict[str, list[str]] = {
    "fastapi": ["fastapi", "uvicorn", "httptools", "uvloop", "pydantic", "onnxruntime", "numpy", "redis", "hiredis",
                "matplotlib"],
    "litserve": ["litserve==0.2.19", "onnxruntime", "numpy"],
    "mlserver": ["mlserver==1.7.1", "onnxruntime", "numpy"],
}
WORKLOADS = ("W0", "W80", "W100")
STREAM = 320_000  # ids per stream: longer than any 15 s cell (the bare ceiling reached 12k req/s, 180k ids)
# Every server is a fresh process and Redis is flushed between servers, so ids need to be apart only
# within one server: each (workload, run) gets its own range of STREAM ids (stream.lua's hash of an
# id stays exact below ~3.4M, hence at most 3 runs), warm-up ids lie above them all.
MAX_RUNS = 3
WARM_ID = 3_300_000
UVICORN = ["--no-access-log", "--log-level", "warning", "--http", "httptools", "--loop", "uvloop"]


@dataclass(frozen=True)
class Peer:
    key: str
    label: str
    env: str  # "fastapi", "litserve", "mlserver" or "modelreg" (the project's venv)
    path: str  # the predict or infer path
    body_format: str = "predict"


PEERS = [
    Peer("bare", "bare FastAPI returning a constant (ceiling)", "fastapi", "/models/bare/predict"),
    Peer("ort", "FastAPI + ONNX Runtime, no cache", "fastapi", "/models/mlp/predict"),
    Peer("ort-redis", "the usual FastAPI + Redis cache (pydantic body, md5 key)", "fastapi", "/models/mlp/predict"),
    Peer("litserve", "LitServe, batching 16 / 5 ms", "litserve", "/predict"),
    Peer("mlserver", "Seldon MLServer 1.7.1 (V2)", "mlserver", "/v2/models/mlp/infer", "v2"),
    Peer("on", "modelreg, cache on (default)", "modelreg", "/models/mlp/predict"),
    Peer("off", "modelreg, cache off (TTL 0)", "modelreg", "/models/mlp-off/predict"),
    Peer("v2", "modelreg V2 `/v2/models/mlp/infer`, cache on", "modelreg", "/v2/models/mlp/infer", "v2"),
    Peer("nofl", "modelreg, first level off (every hit a Redis GET)", "modelreg-nofl", "/models/mlp/predict"),
]


@dataclass
class Cell:
    peer: str
    workload: str
    runs: list[WrkResult] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return statistics.median(r.requests_per_s for r in self.runs)

    @property
    def p99(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# environments -----------------------------------------------------------------------------

def ensure_env(name: str) -> Path:
    """bench/.envs/<name>, built with ``python -m venv`` + pip on first use (a stamp names what it holds)."""
    folder, packages = ENVS / name, ENV_PACKAGES[name]
    stamp = folder / ".bench-packages"
    if stamp.exists() and stamp.read_text() == "\n".join(packages):
        return folder
    log(f"building bench/.envs/{name}: {' '.join(packages)}")
    venv.create(folder, with_pip=True, clear=True)
    subprocess.run([str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", "-c", str(CONSTRAINTS),
                    *packages], check=True)
    stamp.write_text("\n".join(packages))
    return folder


def python_of(env: str) -> str:
    return sys.executable if env.startswith("modelreg") else str(ENVS / env / "bin" / "python")


# servers ----------------------------------------------------------------------------------

@dataclass
class Running:
    url: str
    process: subprocess.Popen[bytes]


@contextmanager
def serving(peer: Peer, model: Path, redis: BenchRedis, work: Path) -> Iterator[Running]:
    """Start ``peer`` on core 0 and wait until it answers; stop it (and its children) afterwards."""
    port = free_port()
    env = {**os.environ, "BENCH_MODEL": str(model), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(APPS)}
    cwd, health = APPS, "/healthz"
    python = python_of(peer.env)
    if peer.key == "bare":
        args = [python, "-m", "uvicorn", "bare_app:create_app", "--factory", "--port", str(port), *UVICORN]
        env["PYTHONPATH"] = str(BENCH)
    elif peer.key in ("ort", "ort-redis"):
        args = [python, "-m", "uvicorn", "fastapi_ort:app", "--port", str(port), *UVICORN]
        if peer.key == "ort-redis":
            env["REDIS_URL"] = redis.url
    elif peer.key == "litserve":
        args, health = [python, str(APPS / "litserve_mlp.py"), str(port)], "/health"
    elif peer.key == "mlserver":
        args, health = [str(ENVS / "mlserver" / "bin" / "mlserver"), "start", str(APPS / "mlserver_mlp")], \
            "/v2/health/ready"
        env.update(MLSERVER_HTTP_PORT=str(port), MLSERVER_GRPC_PORT=str(free_port()),
                   MLSERVER_METRICS_PORT=str(free_port()), MLSERVER_PARALLEL_WORKERS="0",
                   MLSERVER_LOGGING_LEVEL="WARNING")
    else:  # modelreg, from the project's venv
        extra = {"MODELREG_FIRST_LEVEL_BYTES": "0"} if peer.env == "modelreg-nofl" else {}
        env.update(modelreg_env(work / f"data-{peer.env}-{port}", redis.url, **extra))
        args, cwd = [python, "-m", "uvicorn", "modelreg.api.app:create_app", "--factory", "--port", str(port),
                     *UVICORN], ROOT
    out = (work / f"{peer.key}.log").open("ab")
    process = subprocess.Popen(["taskset", "-c", "0", *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(process, url + health, work / f"{peer.key}.log")
        yield Running(url, process)
    finally:
        _stop(process)


def _wait(process: subprocess.Popen[bytes], url: str, log_file: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited at start:\n{log_file.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:g}s:\n{log_file.read_text()[-3000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (LitServe and MLServer start children), SIGKILL if it lingers."""
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


# the run ----------------------------------------------------------------------------------

def streams(folder: Path) -> dict[str, list[int]]:
    return {"W0": list(range(1, STREAM + 1)), "W80": stream_ids(STREAM, 0.8, seed=1), "W100": [1] * 1000}


def measure(peers: list[Peer], seconds: int, runs: int, connections: int,
            work: Path, pairs: int = 3) -> tuple[list[Cell], list[Paired]]:
    """Every cell, and (with the cache-on server) the sets of alternating rounds of ``measure_beside``."""
    model = ENVS / "mlp.onnx"
    if not model.exists():
        log("building the MLP 512-4096-4096-16 (ONNX, fp32)")
        build_mlp(model)
    ids = streams(work)
    stream_dir = ENVS / "streams"
    stream_dir.mkdir(exist_ok=True)
    cells: list[Cell] = []
    paired: list[Paired] = []
    redis = BenchRedis(core=1)
    try:
        for index, peer in enumerate(peers):
            log(f"{peer.label}: starting")
            redis_flush(redis)
            with serving(peer, model, redis, work) as server:
                if peer.env.startswith("modelreg"):
                    register_modelreg(server.url, model)
                url = server.url + peer.path
                warm_up(url, peer, stream_dir / f"warm-{peer.key}.txt", WARM_ID + index, connections)
                for w_index, workload in enumerate(WORKLOADS):
                    cell = Cell(peer.key, workload)
                    for run in range(runs):
                        offset = STREAM * (w_index * runs + run)
                        stream = write_ids(stream_dir / f"{workload}-{peer.key}-{run}.txt",
                                           [i + offset for i in ids[workload]])
                        result = run_wrk(url, ids_file=stream, seconds=seconds, connections=connections,
                                         cycle=workload == "W100", body_format=peer.body_format)
                        if result.non_2xx:
                            raise RuntimeError(f"{peer.label} {workload}: {result.non_2xx} non-2xx answers "
                                               f"(see {work / (peer.key + '.log')})")
                        cell.runs.append(result)
                        log(f"  {workload:4} run {run + 1}: {result.requests_per_s:8.0f} req/s  "
                            f"p99 {result.p99_ms:7.1f} ms  {result.extra}")
                    cells.append(cell)
                if peer.key == "on":
                    paired.extend(measure_beside(server, [p for p in peers if p.key in PAIRED_PEERS],
                                                 model, redis, work, stream_dir, seconds, connections, pairs,
                                                 base=paired_base(runs)))
    finally:
        redis.stop()
    return cells, paired


PAIRED_IDS = 40_000  # id space per round: more than a 15 s W0 round consumes here (~22k), so no id repeats
PAIRED_W80 = 150_000  # requests in a paired W80 round's stream (ids below PAIRED_IDS / 5 of its own range)


@dataclass(frozen=True)
class Round:
    """One of the alternating rounds: ``workload`` on ``path`` of the server ``server`` (a peer's key)."""

    name: str
    server: str
    path: str
    body_format: str
    workload: str


# Each set of rounds compares what one goal compares, a round apart, on servers that all stay up (on
# core 0, each idle while another is measured): the cache (the cache-on and cache-off models of one
# server), the route (V2 and predict on one model), and modelreg against the bare ceiling and the
# plain FastAPI + ONNX Runtime server.
PAIRED_ROUNDS = (
    Round("on", "on", "/models/mlp/predict", "predict", "W0"),
    Round("off", "on", "/models/mlp-off/predict", "predict", "W0"),
    Round("v2", "on", "/v2/models/mlp/infer", "v2", "W0"),
    Round("on-w80", "on", "/models/mlp/predict", "predict", "W80"),
    Round("ort-w80", "ort", "/models/mlp/predict", "predict", "W80"),
    Round("on-w100", "on", "/models/mlp/predict", "predict", "W100"),
    Round("v2-w100", "on", "/v2/models/mlp/infer", "v2", "W100"),
    Round("bare-w100", "bare", "/models/bare/predict", "predict", "W100"),
)
# The peers started beside the cache-on server for the rounds that compare with them.
PAIRED_PEERS = {what.server for what in PAIRED_ROUNDS} - {"on"}

Paired = dict[str, WrkResult]  # one set of alternating rounds: round name -> its result


def paired_base(runs: int) -> int:
    """The first id above every workload cell's ids (each (workload, run) has STREAM of its own)."""
    return STREAM * len(WORKLOADS) * runs


def most_pairs(runs: int) -> int:
    """How many sets of paired rounds fit between the cells' ids and the warm-up ids."""
    return (WARM_ID - paired_base(runs)) // (len(PAIRED_ROUNDS) * PAIRED_IDS)


def paired_ids(workload: str, offset: int) -> tuple[list[int], bool]:
    """A paired round's ids, all in (offset, offset + PAIRED_IDS], and whether wrk may cycle them."""
    if workload == "W0":
        return list(range(offset + 1, offset + PAIRED_IDS + 1)), False
    if workload == "W80":
        return [i + offset for i in stream_ids(PAIRED_W80, 0.8, seed=1)], False
    return [offset + 1] * 1000, True


def measure_paired(urls: Mapping[str, str], stream_dir: Path, seconds: int, connections: int,
                   count: int = 3, *, base: int, pids: Mapping[str, int] | None = None) -> list[Paired]:
    """``count`` sets of PAIRED_ROUNDS, one after another, on the servers of ``urls`` (peer key -> URL).

    Separate servers measured minutes apart compare the machine's speed as much as the servers (it
    drifts by ±30 % over minutes here); rounds a few seconds apart, alternating, compare the servers.
    Every round reads ids of its own: no round hits what another computed. Rounds whose server is
    not in ``urls`` are left out. Where ``pids`` names a round's server process, the round also
    records that process's CPU seconds (``WrkResult.server_cpu_s``).
    """
    found: list[Paired] = []
    for index in range(count):
        one: Paired = {}
        for side, what in enumerate(PAIRED_ROUNDS):
            if what.server not in urls:
                continue
            offset = base + PAIRED_IDS * (len(PAIRED_ROUNDS) * index + side)
            ids, cycle = paired_ids(what.workload, offset)
            stream = write_ids(stream_dir / f"paired-{what.name}-{index}.txt", ids)
            pid = (pids or {}).get(what.server)
            cpu = process_cpu_seconds(pid) if pid else 0.0
            result = run_wrk(urls[what.server] + what.path, ids_file=stream, seconds=seconds,
                             connections=connections, cycle=cycle, body_format=what.body_format)
            if pid:
                result = replace(result, server_cpu_s=process_cpu_seconds(pid) - cpu)
            if result.non_2xx:
                raise RuntimeError(f"paired {what.workload} on {what.server} {what.path}: "
                                   f"{result.non_2xx} non-2xx answers")
            one[what.name] = result
        log(f"  paired {index + 1}: " + ", ".join(f"{name} {r.requests_per_s:,.0f}" for name, r in one.items())
            + " req/s" + "".join(f", {label} {ratio:.2f}x" for label, ratio in paired_ratios(one).items()))
        found.append(one)
    return found


def warm_up(url: str, peer: Peer, ids_file: Path, warm_id: int, connections: int) -> None:
    """2 s of one repeated input (``warm_id``, outside every measured range) before a server is measured."""
    run_wrk(url, ids_file=write_ids(ids_file, [warm_id] * 100), seconds=2, connections=connections, cycle=True,
            body_format=peer.body_format)


def measure_beside(on: Running, beside: list[Peer], model: Path, redis: BenchRedis, work: Path, stream_dir: Path,
                   seconds: int, connections: int, pairs: int, *, base: int) -> list[Paired]:
    """The alternating rounds on the cache-on server ``on``, with the peers of ``beside`` started
    (on core 0 too) and warmed for the rounds that compare with them."""
    with ExitStack() as stack:
        urls = {"on": on.url}
        for peer in beside:
            log(f"{peer.label}: starting beside the cache-on server for the alternating rounds")
            running = stack.enter_context(serving(peer, model, redis, work))
            # A warm-up id of its own: above those of the cells' servers (WARM_ID + their index).
            warm_up(running.url + peer.path, peer, stream_dir / f"warm-paired-{peer.key}.txt",
                    WARM_ID + len(PEERS) + len(urls), connections)
            urls[peer.key] = running.url
        # taskset execs the server: its pid is the server's (the peers' own children are not counted).
        return measure_paired(urls, stream_dir, seconds, connections, pairs, base=base, pids={"on": on.process.pid})


# What each alternating goal divides: (numerator round, denominator round).
PAIRED_GOALS = {
    "on/off": ("on", "off"),
    "V2/predict": ("v2", "on"),
    "W80 on/ort": ("on-w80", "ort-w80"),
    "V2/predict hits": ("v2-w100", "on-w100"),
    "W100 on/bare": ("on-w100", "bare-w100"),
}


def paired_ratios(one: Paired) -> dict[str, float]:
    """The ratios of PAIRED_GOALS that this set of rounds measured, and, where both rounds recorded the
    server's CPU, the same ratio read from CPU per request (``<goal> by CPU``: the cost of a request in
    the denominator's round over its cost in the numerator's, as req/s would read on a core of its own)."""
    found: dict[str, float] = {}
    for label, (a, b) in PAIRED_GOALS.items():
        if a not in one or b not in one:
            continue
        if one[b].requests_per_s:
            found[label] = one[a].requests_per_s / one[b].requests_per_s
        cost_a, cost_b = one[a].cpu_us_per_request, one[b].cpu_us_per_request
        if cost_a and cost_b:
            found[f"{label} by CPU"] = cost_b / cost_a
    return found


def redis_flush(redis: BenchRedis) -> None:
    import redis as redis_client

    client = redis_client.Redis.from_url(redis.url)
    client.flushall()
    client.close()


def register_modelreg(url: str, model: Path) -> None:
    register(url, "mlp", model)  # the default policy: cache on, batching 16 / 5 ms
    register(url, "mlp-off", model, cache_ttl_seconds=0)


# the table and the goals ---------------------------------------------------------------------

def table(cells: list[Cell], peers: list[Peer]) -> str:
    get = _getter(cells)
    lines = ["| server | W0 req/s | W0 p99 ms | W80 req/s | W80 p99 ms | W100 req/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for peer in peers:
        row = [peer.label]
        for workload, what in (("W0", "rps"), ("W0", "p99"), ("W80", "rps"), ("W80", "p99"), ("W100", "rps")):
            cell = get(peer.key, workload)
            row.append("" if cell is None else f"{getattr(cell, what):,.0f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _getter(cells: list[Cell]) -> Callable[[str, str], Cell | None]:
    found = {(c.peer, c.workload): c for c in cells}
    return lambda peer, workload: found.get((peer, workload))


def goals(cells: list[Cell],
          paired: list[Paired] | None = None) -> list[tuple[str, float, float, bool, str]]:
    """(goal, measured, target, passed, how) for every goal whose cells were measured."""
    get = _getter(cells)
    out: list[tuple[str, float, float, bool, str]] = []

    def ratio(label: str, a: tuple[str, str], b: tuple[str, str], target: float) -> None:
        x, y = get(*a), get(*b)
        if x and y and y.rps:
            out.append((label, x.rps / y.rps, target, x.rps / y.rps >= target, "x"))

    def at_most(label: str, a: tuple[str, str], limit: float | tuple[str, str]) -> None:
        x = get(*a)
        bound = get(*limit) if isinstance(limit, tuple) else None
        value = bound.p99 if bound else limit if isinstance(limit, float) else None
        if x and value is not None:
            out.append((label, x.p99, value, x.p99 <= value, "ms"))

    def alternating(label: str, which: str, target: float) -> None:
        found = [r[which] for r in map(paired_ratios, paired or []) if which in r]
        if found:
            median = statistics.median(found)
            out.append((label.format(n=len(found)), median, target, median >= target, "x"))

    ratio("W0: cache on / cache off (>= 0.95x)", ("on", "W0"), ("off", "W0"), 0.95)
    alternating("W0: cache on / cache off, alternating in one server (median of {n} pairs, >= 0.95x)", "on/off", 0.95)
    alternating("W0: cache on / cache off, alternating, by the server's CPU per request (median of {n} pairs, "
                ">= 0.95x)", "on/off by CPU", 0.95)
    ratio("W0: cache on / LitServe batched (>= 2x)", ("on", "W0"), ("litserve", "W0"), 2.0)
    at_most("W0: cache on p99 <= LitServe's p99", ("on", "W0"), ("litserve", "W0"))
    ratio("W80: cache on / FastAPI + ORT no cache (>= 10x)", ("on", "W80"), ("ort", "W80"), 10.0)
    alternating("W80: cache on / FastAPI + ORT no cache, alternating (median of {n} pairs, >= 10x)", "W80 on/ort", 10.0)
    at_most("W80: cache on p99 (<= 20 ms)", ("on", "W80"), 20.0)
    w80 = [one["on-w80"].p99_ms for one in paired or [] if "on-w80" in one]
    if w80:
        median = statistics.median(w80)
        out.append((f"W80: cache on p99, median of {len(w80)} alternating rounds (<= 20 ms)", median, 20.0,
                    median <= 20.0, "ms"))
    ratio("V2 hits (W100) / predict hits (>= 0.7x)", ("v2", "W100"), ("on", "W100"), 0.7)
    alternating("V2 hits (W100) / predict hits, alternating in one server (median of {n} pairs, >= 0.7x)",
                "V2/predict hits", 0.7)
    ratio("V2 W0 / predict W0 (>= 0.9x)", ("v2", "W0"), ("on", "W0"), 0.9)
    alternating("V2 W0 / predict W0, alternating in one server (median of {n} pairs, >= 0.9x)", "V2/predict", 0.9)
    alternating("V2 W0 / predict W0, alternating, by the server's CPU per request (median of {n} pairs, >= 0.9x)",
                "V2/predict by CPU", 0.9)
    ratio("W100: cache on / bare FastAPI ceiling (>= 1.0x)", ("on", "W100"), ("bare", "W100"), 1.0)
    alternating("W100: cache on / bare FastAPI ceiling, alternating (median of {n} pairs, >= 1.0x)",
                "W100 on/bare", 1.0)
    return out


def goal_lines(found: list[tuple[str, float, float, bool, str]]) -> str:
    lines = ["| goal | measured | target | |", "|---|---:|---:|---|"]
    for label, value, target, passed, unit in found:
        shown = f"{value:.2f}x" if unit == "x" else f"{value:.0f} ms"
        bound = f"{target:.2f}x" if unit == "x" else f"{target:.0f} ms"
        lines.append(f"| {label} | {shown} | {bound} | {'pass' if passed else 'FAIL'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15, help="length of each measured cell (default 15)")
    parser.add_argument("--runs", type=int, default=1, help="runs per cell; the table shows medians (default 1)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=3,
                        help="sets of alternating rounds on the cache-on server and its peers (default 3)")
    parser.add_argument("--servers", default=",".join(p.key for p in PEERS),
                        help=f"comma-separated subset of: {', '.join(p.key for p in PEERS)}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where peers.{md,json,png} go (bench/results)")
    args = parser.parse_args()
    if not 1 <= args.runs <= MAX_RUNS:
        parser.error(f"--runs must be between 1 and {MAX_RUNS}")
    wanted = [k for k in args.servers.split(",") if k]
    unknown = set(wanted) - {p.key for p in PEERS}
    if unknown:
        parser.error(f"unknown server(s) {', '.join(sorted(unknown))}")
    peers = [p for p in PEERS if p.key in wanted]
    started = time.monotonic()
    ENVS.mkdir(exist_ok=True)
    for env in sorted({p.env for p in peers if not p.env.startswith("modelreg")} | {"fastapi"}):
        ensure_env(env)
    work = ENVS / "run"
    work.mkdir(exist_ok=True)
    most = most_pairs(args.runs)  # each round reads ids of its own below WARM_ID
    if not 1 <= args.pairs <= most:
        parser.error(f"--pairs must be between 1 and {most} with --runs {args.runs}")
    cells, paired = measure(peers, args.seconds, args.runs, args.connections, work, args.pairs)
    stamp = time.strftime("%Y-%m-%d %H:%M %Z")
    found = goals(cells, paired)
    report = (f"Run {stamp}: `python bench/peers.py --seconds {args.seconds} --runs {args.runs} --pairs {args.pairs}` "
              f"(medians of {args.runs} run(s) of {args.seconds} s, wrk -t1 -c{args.connections}; "
              f"load average {os.getloadavg()[0]:.1f} at the end)\n\n"
              f"{table(cells, peers)}\n\n{goal_lines(found)}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peers.md").write_text(report)
    (args.out / "peers.json").write_text(json.dumps(
        {"when": stamp, "seconds": args.seconds, "runs": args.runs, "connections": args.connections,
         "cells": [{"server": c.peer, "label": next(p.label for p in PEERS if p.key == c.peer),
                    "workload": c.workload, "req_per_s": c.rps, "p99_ms": c.p99,
                    "runs": [asdict(r) for r in c.runs]} for c in cells],
         "paired": [{name: asdict(result) for name, result in one.items()} for one in paired],
         "goals": [{"goal": g, "measured": v, "target": t, "pass": ok} for g, v, t, ok, _ in found]}, indent=2))
    chart = subprocess.run([python_of("fastapi"), str(BENCH / "peers_chart.py"), str(args.out / "peers.json"),
                            str(args.out / "peers.png")], capture_output=True, text=True)
    if chart.returncode != 0:
        print(f"no chart: {chart.stderr[-500:]}")
    print("\n" + report)
    print(f"wrote {args.out}/peers.md, peers.json and peers.png in {(time.monotonic() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
