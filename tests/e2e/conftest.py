"""Real processes: modelreg replicas under uvicorn, on the real PostgreSQL and Redis."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import AUTH, TOKEN, echo_artifact
from tests.e2e.redis_topologies import redis_cluster, redis_sentinel  # noqa: F401  (fixtures: Cluster, Sentinel)

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Replica:
    """One ``uvicorn api.app:create_app`` process (or ``modelreg serve``) with its own port and environment."""

    def __init__(self, env: dict[str, str], log: Path, *, cli: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log = log
        self.cli = cli
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        if self.cli:  # the installed console script, as an operator runs it (its own logging and shutdown)
            return [str(Path(sys.executable).with_name("modelreg")), "serve", "--host", "127.0.0.1",
                    "--port", str(self.port), "--log-level", "info"]
        return [sys.executable, "-m", "uvicorn", "modelreg.api.app:create_app", "--factory", "--host", "127.0.0.1",
                "--port", str(self.port), "--log-level", "warning"]

    def start(self, timeout: float = 60.0) -> None:
        out = self.log.open("ab")
        self.process = subprocess.Popen(self.command(), cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"replica exited at start:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"replica did not answer within {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def state(self) -> str:
        """Whether the process still runs, or how it ended (a signal number is negative, as Popen gives it)."""
        if self.process is None:
            return "stopped"
        code = self.process.poll()
        return f"running (pid {self.process.pid})" if code is None else f"exited with {code}"


# The type of the ``start_replicas`` fixture: start_replicas(n, database_url=..., redis_url=..., **env).
StartReplicas = Callable[..., list[Replica]]
STARTED = pytest.StashKey[list[Replica]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A test that fails shows each replica's state and the end of its log, taken before teardown stops
    it: an answer that never came (a ReadError, say) is otherwise a riddle on a CI machine."""
    report = yield
    if report.failed and call.when == "call":
        for i, replica in enumerate(item.stash.get(STARTED, [])):
            text = replica.log.read_text(errors="replace")[-4000:] if replica.log.exists() else ""
            report.sections.append((f"replica {i} ({replica.url}): {replica.state()}", text or "(empty log)"))
    return report


@pytest.fixture
def start_replicas(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StartReplicas]:
    """Start N replicas sharing one database, one Redis and one artifact folder."""
    started: list[Replica] = []
    request.node.stash[STARTED] = started

    def _start(n: int, *, database_url: str, redis_url: str | None, cli: bool = False,
               **extra: str) -> list[Replica]:
        env = {**os.environ, "MODELREG_DATABASE_URL": database_url, "MODELREG_ADMIN_TOKEN": TOKEN,
               "MODELREG_DATA_DIR": str(tmp_path / "data"), "MODELREG_AUTO_MIGRATE": "true",
               "MODELREG_POLL_INTERVAL_SECONDS": "0.5",
               "MODELREG_CACHE_PREFIX": f"modelreg-test-{uuid.uuid4().hex[:8]}", "MODELREG_PLUGINS": "echo", **extra}
        if redis_url is not None:
            env["MODELREG_REDIS_URL"] = redis_url
        replicas = [Replica(env, tmp_path / f"replica-{len(started) + i}.log", cli=cli) for i in range(n)]
        for replica in replicas:
            replica.start()
            started.append(replica)
        return replicas

    yield _start
    for replica in started:
        replica.stop()


def create_echo_model(url: str, name: str, offsets: list[float], **policy: object) -> None:
    """Register an echo model with one version per offset (version v answers x + offsets[v-1])."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        assert client.post("/admin/models", json={"name": name, "runtime": "echo", **policy}).status_code == 201
        for offset in offsets:
            response = client.post(f"/admin/models/{name}/versions",
                                   files={"artifact": ("m.json", echo_artifact(offset))})
            assert response.status_code == 201 and response.json()["status"] == "ready", response.text


def register_echo(url: str, name: str, artifact: bytes) -> None:
    """Create an echo model with one version made of ``artifact`` and promote it."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as admin:
        assert admin.post("/admin/models", json={"name": name, "runtime": "echo"}).status_code == 201
        uploaded = admin.post(f"/admin/models/{name}/versions", files={"artifact": ("a.json", artifact)})
        assert uploaded.json()["status"] == "ready", uploaded.text
        assert admin.post(f"/admin/models/{name}/promote", json={"version": 1}).status_code == 200


def until(check: Callable[[], Any], what: str, timeout: float = 20.0, every: float = 0.1) -> Any:
    """``check()``'s first truthy answer within ``timeout`` seconds (a poll with a deadline, never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        time.sleep(every)


class CheckedLoad:
    """Threads posting a few echo inputs to each replica until stopped, checking every answer's output
    against the version it names (the outage and failover tests' load; an assert in a thread would not
    fail the test, so what is wrong is collected)."""

    def __init__(self, replicas: list[Replica], offsets: list[float], *, threads_per_replica: int = 2) -> None:
        self.offsets = offsets
        self.seen: list[tuple[float, int, str]] = []  # (when, status, X-Cache)
        self.versions: set[int] = set()
        self.wrong: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._load, args=(r, i))
                         for i, r in enumerate(replicas * threads_per_replica)]

    def __enter__(self) -> CheckedLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def _load(self, replica: Replica, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=replica.url, timeout=10) as client:
            while not self._stop.is_set():
                x = float(rng.randrange(10))  # few inputs: hits and misses both happen
                response = client.post("/models/m/predict", json={"inputs": [[x]]})
                self.seen.append((time.monotonic(), response.status_code, response.headers.get("x-cache", "")))
                if response.status_code != 200:
                    continue
                version = int(response.headers["x-model-version"])
                self.versions.add(version)
                expected = {"model": "m", "version": version, "outputs": [[x + self.offsets[version - 1]]]}
                if response.json() != expected:
                    self.wrong.append(f"{replica.url} v{version} answered {response.text} for {x} "
                                      f"({response.headers['x-cache']})")
