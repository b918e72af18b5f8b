"""Shared bench parts: the benchmark MLP, a pinned server process, a bench-owned Redis, wrk runs."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_mlp(path: Path, sizes: tuple[int, ...] = (512, 4096, 4096, 16), seed: int = 0) -> Path:
    """float32 [batch, 512] -> 4096 -> 4096 -> 16 (ReLU between), as ONNX built with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(pairwise(sizes)):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")]
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        last = i == len(sizes) - 2
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], ["y" if last else f"a{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"r{i}"]))
            prev = f"r{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 512])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", sizes[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


class BenchRedis:
    """A redis-server of the bench's own, on a free port, pinned to a core."""

    def __init__(self, core: int = 1) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.process = subprocess.Popen(
            ["taskset", "-c", str(core), "redis-server", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--enable-debug-command", "yes", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.RedisError:
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_server(app: str, env: dict[str, str], *, core: int = 0, factory: bool = True,
                 log: Path | None = None) -> Server:
    """uvicorn with one worker, httptools + uvloop, no access log, pinned to ``core``."""
    port = free_port()
    args = ["taskset", "-c", str(core), sys.executable, "-m", "uvicorn", app, "--port", str(port),
            "--no-access-log", "--log-level", "warning", "--http", "httptools", "--loop", "uvloop"]
    if factory:
        args.append("--factory")
    out = (log or Path(os.devnull)).open("ab")
    process = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz", timeout=0.5).status_code == 200:
                return Server(process, url)
        except httpx.HTTPError:
            time.sleep(0.1)
        if process.poll() is not None:
            break
    raise RuntimeError(f"{app} did not start")


def modelreg_env(data_dir: Path, redis_url: str | None, **extra: str) -> dict[str, str]:
    env = {"MODELREG_DATA_DIR": str(data_dir), "MODELREG_ADMIN_TOKEN": TOKEN, "MODELREG_PLUGINS": "onnx",
           "MODELREG_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "MODELREG_INTRA_OP_THREADS": "1", **extra}
    if redis_url:
        env["MODELREG_REDIS_URL"] = redis_url
    return env


def register(url: str, name: str, artifact: Path, **policy: object) -> None:
    """Create, upload and promote one ONNX model through the admin API."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=600) as client:
        client.post("/admin/models", json={"name": name, "runtime": "onnx", **policy}).raise_for_status()
        with artifact.open("rb") as f:
            up = client.post(f"/admin/models/{name}/versions", files={"artifact": (artifact.name, f)})
        up.raise_for_status()
        assert up.json()["status"] == "ready", up.text
        client.post(f"/admin/models/{name}/promote", json={"version": up.json()["version"]}).raise_for_status()


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    extra: dict[str, int]
    # The server process's CPU seconds (all its threads, user + system) over the run, where measured:
    # unlike req/s, CPU per request does not move when another tenant takes the core for a while.
    server_cpu_s: float | None = None

    @property
    def cpu_us_per_request(self) -> float | None:
        return None if self.server_cpu_s is None or not self.requests else self.server_cpu_s / self.requests * 1e6


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far, all its threads (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()  # the name in (...) may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, *, ids_file: Path, seconds: int, connections: int, core: int = 1,
            cycle: bool = False, body_format: str = "predict") -> WrkResult:
    """wrk pinned to ``core``, one request per id of ``ids_file`` in order (see stream.lua).

    ``cycle`` allows replaying the ids (W100, W0 where repeats don't matter); a stream must not.
    ``body_format`` is ``predict`` (``{"inputs": [[...]]}``) or ``v2`` (an Open Inference Protocol body).
    """
    env = {**os.environ, "BENCH_IDS": str(ids_file), "BENCH_FORMAT": body_format}
    out = subprocess.run(
        ["taskset", "-c", str(core), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-s", str(ROOT / "bench" / "stream.lua"), url],
        env=env, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+\w+)", out, re.M))
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    extra = {k: int(v) for k, v in re.findall(r"^x-cache ([\w-]+) (\d+)$", out, re.M)}
    if extra.pop("stream-exhausted", None) and not cycle:
        raise RuntimeError("the request stream ran out before the run ended: generate a longer one")
    return WrkResult(rps, _ms(lat.get("50", "0ms")), _ms(lat.get("99", "0ms")), total,
                     int(non2xx.group(1)) if non2xx else 0, extra)


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def stream_ids(n: int, repeat_share: float, *, zipf_s: float = 1.1, seed: int = 0) -> list[int]:
    """n request ids in which exactly ``repeat_share`` of requests repeat an earlier id (Zipf-drawn).

    Every ``1/(1-share)``-th request is a new id, the others draw an already-seen id with Zipf
    weights over first-seen order, so every prefix of the stream has the same repeat share.
    """
    rng = np.random.default_rng(seed)
    period = round(1 / (1 - repeat_share)) if repeat_share < 1 else 0
    cumulative = np.cumsum(1.0 / np.arange(1, n + 1) ** zipf_s)
    ids: list[int] = []
    distinct = 0
    for i in range(n):
        if distinct and (period == 0 or i % period != 0):
            u = rng.random() * cumulative[distinct - 1]
            ids.append(int(np.searchsorted(cumulative, u, side="right")) + 1)
        else:
            distinct += 1
            ids.append(distinct)
    return ids


def write_ids(path: Path, ids: list[int]) -> Path:
    path.write_text("\n".join(map(str, ids)) + "\n")
    return path


def distinct_in_prefix(ids: list[int], n: int) -> int:
    return len(set(ids[:n]))


def modes(max_batch_size: int) -> dict[str, dict[str, object]]:
    """Model policies of the four bench modes: cache+batching, cache only, batching only, neither."""
    batch: dict[str, object] = {"max_batch_size": max_batch_size, "max_delay_ms": 2}
    unbatched: dict[str, object] = {"max_batch_size": 1}
    return {"cache+batching": batch, "cache only": unbatched,
            "batching only": {**batch, "cache_ttl_seconds": 0}, "neither": {**unbatched, "cache_ttl_seconds": 0}}
