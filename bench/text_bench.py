"""Issue 7's text workload: 5,000 requests drawn Zipf-style from 1,000 sentences, through
/models/{name}/predict of all-MiniLM-L6-v2 (the text-embedding example), per serving mode.
Prints throughput, p50, p99 and model executions per request side by side; writes JSON.

    python bench/text_bench.py [--pack build/minilm.zip] [--requests 5000] [--concurrency 32]

The server (one uvicorn worker, httptools + uvloop, one ONNX Runtime thread) is pinned to core 0;
this process (bench/fixed_load.py: every request sent exactly once over keep-alive connections)
and the bench's own Redis share core 1. Every mode is its
own model on the same server (the same pack uploaded to each), so the modes see the same
process, the same Redis and the same request stream, and none reads another's cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from common import AUTH, ROOT, BenchRedis, modelreg_env, modes, start_server
from fixed_load import post_all

MODES = modes(max_batch_size=32)
SUBJECTS = ["The new phone", "My neighbour's dog", "Our team", "The museum", "This restaurant", "The morning train",
            "The city council", "My grandmother", "The software update", "The football club", "A local bakery",
            "The hotel staff", "The weather forecast", "Her latest novel", "The hiking trail", "The online course",
            "The concert hall", "His startup", "The school library", "The airport"]
PREDICATES = ["surprised everyone with", "was praised for", "struggled with", "announced", "is known for",
              "quietly improved", "was criticised for", "finally fixed", "celebrated", "complained about"]
OBJECTS = ["its friendly service", "the long delays", "a brand new menu", "the battery life",
           "an unexpected discount", "the noisy renovation", "a record number of visitors",
           "the confusing instructions", "its beautiful design", "the price increase"]
ENDINGS = ["last weekend.", "this morning.", "after months of waiting.", "during the holidays.", "again on Tuesday.",
           "according to the local paper.", "for the second year running.", "without any warning.",
           "to nobody's surprise.", "before the summer."]


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct real-looking sentences (subject, predicate, object, ending), shuffled by ``seed``."""
    rng = np.random.default_rng(seed)
    combos = len(SUBJECTS) * len(PREDICATES) * len(OBJECTS) * len(ENDINGS)
    if n > combos:
        raise ValueError(f"at most {combos} distinct sentences")
    out = []
    for index in rng.choice(combos, size=n, replace=False):
        index, ending = divmod(int(index), len(ENDINGS))
        index, obj = divmod(index, len(OBJECTS))
        subject, predicate = divmod(index, len(PREDICATES))
        out.append(f"{SUBJECTS[subject]} {PREDICATES[predicate]} {OBJECTS[obj]} {ENDINGS[ending]}")
    return out


def zipf_stream(requests: int, population: int, s: float, seed: int = 1) -> list[int]:
    """``requests`` sentence indices, rank k drawn with probability proportional to 1 / k**s."""
    weights = 1.0 / np.arange(1, population + 1) ** s
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.choice(population, size=requests, p=weights / weights.sum())]


@dataclass
class Run:
    mode: str
    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    executions: int
    rows_executed: int
    executions_per_request: float
    distinct_inputs: int
    cache: dict[str, int] = field(default_factory=dict)
    non_2xx: int = 0


def executed(metrics_text: str, model: str) -> tuple[int, int]:
    """(executions, rows) of ``model`` so far: modelreg_batch_size count and sum."""
    count = total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "modelreg_batch_size":
            continue
        for sample in family.samples:
            if sample.labels.get("model") == model:
                if sample.name.endswith("_count"):
                    count = sample.value
                elif sample.name.endswith("_sum"):
                    total = sample.value
    return int(count), int(total)


def register(url: str, name: str, pack: Path, policy: dict[str, object]) -> None:
    """Create, upload (validated: the server loads the pack and embeds a word) and promote."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=600) as client:
        client.post("/admin/models", json={"name": name, "runtime": "sentence-embedding", **policy}).raise_for_status()
        with pack.open("rb") as f:
            up = client.post(f"/admin/models/{name}/versions", files={"artifact": (pack.name, f)},
                             data={"metadata": json.dumps({"format": "text-embedding"})})
        up.raise_for_status()
        assert up.json()["status"] == "ready", up.text
        client.post(f"/admin/models/{name}/promote", json={"version": up.json()["version"]}).raise_for_status()


def _model(mode: str) -> str:
    return "minilm-" + mode.replace("+", "-").replace(" ", "-")


def _pack(path: Path) -> Path:
    if not path.is_file():
        print(f"{path} is missing: exporting it (about 30 s)", flush=True)
        subprocess.run([sys.executable, str(ROOT / "examples" / "text-embedding" / "export.py"), "--out", str(path)],
                       check=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pack", type=Path, default=ROOT / "build" / "minilm.zip")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent s (rank k has weight 1/k**s)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pack = _pack(args.pack)
    modes = [m for m in args.modes.split(",") if m]
    texts = sentences(args.sentences)
    stream = zipf_stream(args.requests, len(texts), args.zipf)
    bodies = [json.dumps({"inputs": [texts[i]]}).encode() for i in stream]
    distinct = len(set(stream))
    print(f"{args.requests} requests over {len(texts)} sentences (Zipf s={args.zipf}): {distinct} distinct", flush=True)

    work = Path(tempfile.mkdtemp(prefix="modelreg-text-bench-"))
    redis = BenchRedis(core=1)
    env = modelreg_env(work / "data", redis.url, MODELREG_PLUGINS="sentence-embedding")
    server = start_server("modelreg.api.app:create_app", env, log=work / "server.log")
    os.sched_setaffinity(0, {1})  # the load generator shares core 1 with Redis, never the server's core
    runs: list[Run] = []
    try:
        for mode in modes:
            register(server.url, _model(mode), pack, MODES[mode])
        for mode in modes:
            url = f"{server.url}/models/{_model(mode)}/predict"
            warm = [json.dumps({"inputs": [f"A warm-up sentence, number {i}."]}).encode() for i in range(64)]
            post_all(url, warm, args.concurrency)  # sessions warm, batcher lane up
            before = executed(httpx.get(f"{server.url}/metrics").text, _model(mode))
            load = post_all(url, bodies, args.concurrency)
            after = executed(httpx.get(f"{server.url}/metrics").text, _model(mode))
            executions, rows = after[0] - before[0], after[1] - before[1]
            run = Run(mode=mode, requests=len(bodies), seconds=load.seconds, requests_per_s=len(bodies) / load.seconds,
                      p50_ms=float(np.percentile(load.latencies_ms, 50)),
                      p99_ms=float(np.percentile(load.latencies_ms, 99)), executions=executions, rows_executed=rows,
                      executions_per_request=executions / len(bodies), distinct_inputs=distinct,
                      cache=dict(load.cache), non_2xx=load.non_2xx)
            runs.append(run)
            print(f"{mode:15} {run.requests_per_s:8.0f} req/s  p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms  "
                  f"{executions} executions", flush=True)
    finally:
        server.stop()
        redis.stop()

    table = _table(runs)
    print(table)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"text-{stamp}.txt").write_text(table + "\n")
    setup = {"requests": args.requests, "sentences": len(texts), "zipf_s": args.zipf, "distinct": distinct,
             "concurrency": args.concurrency, "policies": {m: MODES[m] for m in modes}}
    (args.out / f"text-{stamp}.json").write_text(json.dumps({"setup": setup, "runs": [asdict(r) for r in runs]},
                                                            indent=2))
    print(f"wrote {args.out}/text-{stamp}.{{txt,json}}")


def _table(runs: list[Run]) -> str:
    lines = [f"{'mode':15} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'executions':>10} {'exec/req':>9} "
             f"{'rows run':>9} {'hit':>6} {'miss':>6} {'coal.':>6} {'bypass':>6} {'non-2xx':>7}", "-" * 107]
    for r in runs:
        c = r.cache
        lines.append(f"{r.mode:15} {r.requests_per_s:8.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.executions:10d} "
                     f"{r.executions_per_request:9.3f} {r.rows_executed:9d} {c.get('hit', 0):6d} {c.get('miss', 0):6d} "
                     f"{c.get('coalesced', 0):6d} {c.get('bypass', 0):6d} {r.non_2xx:7d}")
    best = next((r for r in runs if r.mode == "cache+batching"), None)
    base = next((r for r in runs if r.mode == "neither"), None)
    if best and base and base.executions:
        lines += ["",
                  f"{'throughput, cache+batching / neither (goal >= 5x)':56} "
                  f"{best.requests_per_s / base.requests_per_s:6.2f}x",
                  f"{'model executions saved vs neither (goal >= 75%)':56} "
                  f"{100 * (1 - best.executions / base.executions):6.1f}%"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
