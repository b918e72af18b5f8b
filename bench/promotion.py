"""Promotion latency with N keys cached for the model, against the naive invalidation (SCAN + UNLINK).

    python bench/promotion.py [--sizes 1000,10000,100000,1000000] [--reps 25]
                              [--postgres postgresql+psycopg://postgres@127.0.0.1:5432]

For each key count N, with a bench-owned Redis (pinned to core 1; this process on core 0):

(a) modelreg's promotion, measured for real: N prediction keys of the live namespace are written
    with the real key functions (``keys.prediction_key_prefix`` / ``keys.key_in`` over
    ``keys.input_digest`` of distinct inputs), ~100-byte values, TTL as the cache sets it
    (``SET ... EX default_cache_ttl_seconds``). Then, ``--reps`` times: the real
    ``RegistryService.promote`` (one SQL transaction: alias moves, generation +1, history row) on
    a SQLite file (and PostgreSQL with ``--postgres``), plus the PUBLISH of the change event that
    ``ChangeFeed.publish`` sends (model name on ``keys.events_channel``). Production alternates
    between two versions, so every repetition is a real move. After each one, the bench checks what
    a lookup now uses: the prefix built from the registry's live state (as ``Serving.key_prefix``
    does) is new, a sample of the cached inputs misses under it, the old keys are untouched
    (nothing was deleted) and a subscriber on the channel got the event.

(b) the naive invalidation: the same N keys written again, then SCAN MATCH the model's pattern
    (``keys.model_scan_pattern``) COUNT 1000 and UNLINK of every page found, timed once; the bench
    then checks that zero of the model's keys remain.

Prints a table and writes bench/results/promotion.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelreg.api.settings import Settings
from modelreg.registry import LocalArtifactStore, RegistryService, schema
from modelreg.registry.db import make_engine, make_sessions
from modelreg.registry.entities import PRODUCTION
from modelreg.serving.keys import (
    Namespace,
    events_channel,
    input_digest,
    key_in,
    model_scan_pattern,
    prediction_key_prefix,
)

from common import BenchRedis

MODEL = "promo-bench"
PREFIX = Settings.model_fields["cache_prefix"].default
TTL_SECONDS = Settings.model_fields["default_cache_ttl_seconds"].default
VALUE = (b'{"model_version":1,"outputs":[{"name":"y","datatype":"FP32","shape":[1,4],'
         b'"data":[0.125,0.25,0.5,1.0]}]}')  # ~100 bytes, the shape of a real response body
FILL_BATCH = 10_000
WARMUP = 3
SAMPLE = 200
# One Lua call sets a whole batch (keys in KEYS, value and TTL in ARGV): the fast way to fill 1M keys.
FILL_LUA = "for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'EX', ARGV[2]) end return #KEYS"

OUT = Path(__file__).resolve().parent / "results" / "promotion.json"


@dataclass
class Backend:
    label: str
    registry: RegistryService
    close: Callable[[], None]  # disposes of the engine and drops the bench's database
    server_version: str


def digests(n: int) -> list[str]:
    """``n`` distinct canonical input digests, as the server computes them for [1, 4] float32 inputs."""
    base = np.arange(4, dtype=np.float32).reshape(1, 4)
    return [input_digest({"x": base + np.float32(i)}, response_format="u") for i in range(n)]


def sqlite_backend(work: Path) -> Backend:
    url = f"sqlite:///{work / 'registry.db'}"
    return _backend("sqlite", url, work, lambda: None, sqlite3.sqlite_version)


def postgres_backend(server_url: str, work: Path) -> Backend:
    from sqlalchemy import create_engine, text

    name = f"modelreg_bench_{os.getpid()}"
    admin = create_engine(f"{server_url.rstrip('/')}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        version = str(conn.execute(text("SHOW server_version")).scalar())
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    try:
        return _backend("postgres", f"{server_url.rstrip('/')}/{name}", work, drop, version)
    except BaseException:
        drop()
        raise


def _backend(label: str, url: str, work: Path, drop: Callable[[], None], server_version: str) -> Backend:
    schema.upgrade(url)
    engine = make_engine(url)
    registry = RegistryService(make_sessions(engine), LocalArtifactStore(work / f"artifacts-{label}"))
    registry.create_model(MODEL, "onnx", actor="bench")
    for i in (1, 2):  # two ready versions (no validator: the bench measures the registry, not a runtime)
        registry.upload_version(MODEL, io.BytesIO(f"artifact {i} {uuid.uuid4()}".encode()), filename="m.onnx",
                                metadata={"format": "onnx"}, actor="bench")
    registry.promote(MODEL, 1, actor="bench")

    def close() -> None:
        engine.dispose()
        drop()

    return Backend(label, registry, close, server_version)


def live_prefix(registry: RegistryService) -> str:
    """The key prefix a lookup of the production alias uses now, from the registry's live state."""
    state = registry.live_states()[MODEL]
    version = state.aliases[PRODUCTION]
    sha = registry.get_version(MODEL, version).sha256
    return prediction_key_prefix(Namespace(PREFIX, MODEL, state.generation, version, sha))


def fill(client: redis.Redis, fill_sha: str, prefix: str, digest_list: list[str]) -> float:
    """Write one prediction key per digest under ``prefix``; returns seconds taken."""
    client.flushall()
    start = time.perf_counter()
    for lo in range(0, len(digest_list), FILL_BATCH):
        batch = [key_in(prefix, d) for d in digest_list[lo:lo + FILL_BATCH]]
        client.evalsha(fill_sha, len(batch), *batch, VALUE, TTL_SECONDS)
    seconds = time.perf_counter() - start
    assert client.dbsize() == len(digest_list), (client.dbsize(), len(digest_list))
    return seconds


class Subscriber:
    """One replica's view of the change feed: counts the events it receives."""

    def __init__(self, client: redis.Redis) -> None:
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(events_channel(PREFIX))
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message is not None:
                self.received.append(message["data"])

    def wait_for(self, n: int, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self.received)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.pubsub.close()


def exists_count(client: redis.Redis, keys: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.exists(key)
    return sum(pipe.execute())


def measure_promotion(client: redis.Redis, fill_sha: str, backend: Backend, digest_list: list[str],
                      reps: int) -> dict[str, object]:
    registry = backend.registry
    filled_prefix = live_prefix(registry)
    fill_s = fill(client, fill_sha, filled_prefix, digest_list)
    step = max(1, len(digest_list) // SAMPLE)
    sample = digest_list[::step][:SAMPLE]
    old_keys = [key_in(filled_prefix, d) for d in sample]
    assert exists_count(client, old_keys) == len(old_keys)

    channel = events_channel(PREFIX)
    subscriber = Subscriber(client)
    timings: list[float] = []
    sql_ms: list[float] = []
    publish_ms: list[float] = []
    seen_prefixes = {filled_prefix}
    try:
        for i in range(WARMUP + reps):
            live = registry.live_states()[MODEL].aliases[PRODUCTION]
            target = 2 if live == 1 else 1
            start = time.perf_counter()
            change = registry.promote(MODEL, target, actor="bench")
            committed = time.perf_counter()
            client.publish(channel, MODEL)
            end = time.perf_counter()
            if i >= WARMUP:
                timings.append((end - start) * 1000)
                sql_ms.append((committed - start) * 1000)
                publish_ms.append((end - committed) * 1000)
            # Not timed: what a lookup uses now is a namespace nothing was ever written to, and the
            # keys cached before are untouched (unreachable, left to their TTL and the reaper).
            assert change.production == target
            prefix = live_prefix(registry)
            assert f":g{change.generation}:v{target}:" in prefix, prefix
            assert prefix not in seen_prefixes, prefix
            seen_prefixes.add(prefix)
            assert exists_count(client, [key_in(prefix, d) for d in sample]) == 0
            assert exists_count(client, old_keys) == len(old_keys)
        received = subscriber.wait_for(WARMUP + reps)
    finally:
        subscriber.stop()
    assert received == WARMUP + reps and set(subscriber.received) == {MODEL.encode()}, subscriber.received[:5]
    dbsize = client.dbsize()
    assert dbsize == len(digest_list), (dbsize, len(digest_list))
    return {
        "fill_seconds": round(fill_s, 3),
        "median_ms": round(statistics.median(timings), 3),
        "max_ms": round(max(timings), 3),
        "min_ms": round(min(timings), 3),
        "timings_ms": [round(t, 3) for t in timings],
        "sql_median_ms": round(statistics.median(sql_ms), 3),
        "sql_max_ms": round(max(sql_ms), 3),
        "publish_median_ms": round(statistics.median(publish_ms), 3),
        "publish_max_ms": round(max(publish_ms), 3),
        "loadavg_1m": os.getloadavg()[0],
        "verified": {
            "new_prefix_each_promotion": len(seen_prefixes) - 1,
            "sampled_inputs_miss_under_new_prefix": len(sample),
            "old_keys_untouched": True,
            "keys_in_redis_after": dbsize,
            "events_received": received,
        },
    }


def measure_naive(client: redis.Redis, fill_sha: str, prefix: str, digest_list: list[str]) -> dict[str, object]:
    fill_s = fill(client, fill_sha, prefix, digest_list)
    pattern = model_scan_pattern(PREFIX, MODEL)
    start = time.perf_counter()
    cursor, calls, deleted = 0, 0, 0
    while True:
        cursor, found = client.scan(cursor, match=pattern, count=1000)
        calls += 1
        if found:
            deleted += client.unlink(*found)
        if cursor == 0:
            break
    elapsed = (time.perf_counter() - start) * 1000
    remaining = sum(1 for _ in client.scan_iter(match=pattern, count=1000))
    assert deleted == len(digest_list) and remaining == 0 and client.dbsize() == 0, (deleted, remaining)
    return {"fill_seconds": round(fill_s, 3), "ms": round(elapsed, 3), "scan_calls": calls,
            "deleted": deleted, "remaining": remaining}


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "loadavg": os.getloadavg(), "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "platform": platform.platform()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000,1000000",
                        help="comma-separated key counts (default: 1000,10000,100000,1000000)")
    parser.add_argument("--reps", type=int, default=25, help="timed promotions per size and database")
    parser.add_argument("--postgres", metavar="URL",
                        help="also measure on PostgreSQL: a server URL such as "
                             "postgresql+psycopg://postgres@127.0.0.1:5432 (the bench creates and drops "
                             "its own database there)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 1 or args.reps < 1:
        parser.error("--sizes needs positive key counts and --reps at least 1")

    os.sched_setaffinity(0, {0})  # this process on core 0, the bench's Redis on core 1
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="modelreg-promotion-"))
    started = time.perf_counter()
    print(f"computing {max(sizes):,} input digests ...", flush=True)
    all_digests = digests(max(sizes))

    bench_redis = BenchRedis(core=1)
    client = redis.Redis(port=bench_redis.port)
    backends: list[Backend] = []
    rows: list[dict[str, Any]] = []
    try:
        info["redis"] = client.info("server")["redis_version"]
        fill_sha = client.script_load(FILL_LUA)
        backends.append(sqlite_backend(work))
        if args.postgres:
            backends.append(postgres_backend(args.postgres, work))
            info["postgres"] = backends[-1].server_version
        for n in sizes:
            digest_list = all_digests[:n]
            row: dict[str, Any] = {"keys": n, "promote": {}}
            for backend in backends:
                print(f"{n:>9,} keys: promote on {backend.label} ...", flush=True)
                row["promote"][backend.label] = measure_promotion(client, fill_sha, backend,
                                                                  digest_list, args.reps)
            print(f"{n:>9,} keys: SCAN + UNLINK ...", flush=True)
            row["naive"] = measure_naive(client, fill_sha, live_prefix(backends[0].registry), digest_list)
            rows.append(row)
    finally:
        client.close()
        bench_redis.stop()
        for backend in backends:
            backend.close()
        shutil.rmtree(work, ignore_errors=True)

    info["loadavg_end"] = os.getloadavg()
    labels = [b.label for b in backends]
    head = f"{'keys':>9} |"
    for label in labels:
        head += f" {label + ' median ms':>18} | {label + ' max ms':>15} |"
    head += f" {'SCAN+UNLINK ms':>14} | ratio (naive / {labels[0]} median)"
    lines = [head, "-" * len(head)]
    for row in rows:
        line = f"{row['keys']:>9,} |"
        for label in labels:
            p = row["promote"][label]
            line += f" {p['median_ms']:>18.2f} | {p['max_ms']:>15.2f} |"
        naive_ms = row["naive"]["ms"]
        first = row["promote"][labels[0]]["median_ms"]
        row["ratio"] = round(naive_ms / first, 1)
        line += f" {naive_ms:>14.1f} | {row['ratio']:,.1f}x"
        lines.append(line)
    table = "\n".join(lines)
    print()
    print(table)
    for label in labels:
        medians = [r["promote"][label]["median_ms"] for r in rows]
        worst = max(r["promote"][label]["max_ms"] for r in rows)
        print(f"{label}: promotion median {min(medians):.2f}-{max(medians):.2f} ms over "
              f"{rows[0]['keys']:,}-{rows[-1]['keys']:,} keys (largest/smallest {medians[-1] / medians[0]:.2f}x), "
              f"worst single promotion {worst:.2f} ms; < 10 ms: median {'yes' if max(medians) < 10 else 'NO'}, "
              f"every run {'yes' if worst < 10 else 'NO'}")
    seconds = time.perf_counter() - started
    print(f"total {seconds:.0f}s; load average {info['loadavg']} at start, {info['loadavg_end']} at end")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "bench": "promotion", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": info,
        "settings": {"reps": args.reps, "warmup": WARMUP, "model": MODEL, "prefix": PREFIX,
                     "ttl_seconds": TTL_SECONDS, "value_bytes": len(VALUE), "scan_count": 1000,
                     "databases": labels, "bench_core": 0, "redis_core": 1},
        "rows": rows, "table": table, "total_seconds": round(seconds, 1),
    }, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
