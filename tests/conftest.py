"""Shared fixtures: a registry database per test (SQLite and the real PostgreSQL), the real Redis,
and a Redis server a test owns."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

IN_CI = os.environ.get("CI", "").lower() == "true"
# A server freezes its long-lived objects out of the GC's passes after start-up and after each load
# (one full collection each time); hundreds of apps and managers per test process would pay that
# hundreds of times. tests/api/test_gc_pauses.py turns it on where it is what is tested.
os.environ.setdefault("MODELREG_GC_FREEZE", "false")
POSTGRES_ADMIN_URL = os.environ.get("MODELREG_TEST_POSTGRES_URL",
                                    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def service_missing(what: str, why: str) -> None:
    """Under CI a missing service fails the test; on a laptop it is skipped, visibly."""
    message = f"{what} is not reachable ({why})"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(f"{message}; start it or set CI=true to make this a failure")


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    try:
        engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any failure to connect means "no PostgreSQL here"
        service_missing(f"PostgreSQL at {POSTGRES_ADMIN_URL}", f"{type(exc).__name__}: {exc}".splitlines()[0])
    return POSTGRES_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh database of the test's own, dropped afterwards."""
    name = f"modelreg_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """The same test, once on SQLite and once on the real PostgreSQL."""
    return str(request.getfixturevalue(f"{request.param}_url"))


# Redis ------------------------------------------------------------------------------------

REDIS_URL = os.environ.get("MODELREG_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_missing(what: str, why: str) -> None:
    service_missing(what, why)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the real Redis the cache tests run against."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2, retry=Retry(NoBackoff(), 0))
    try:
        client.ping()
    except redis.RedisError as exc:
        redis_missing(f"Redis at {REDIS_URL}", f"{type(exc).__name__}: {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A prefix no other test uses; every key under it is removed afterwards."""
    prefix = f"modelreg-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.unlink(*keys)
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """A redis-server the test may kill, pause and restart on the same port."""

    def __init__(self, binary: str, port: int, workdir: Path) -> None:
        self.binary = binary
        self.port = port
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=0.2)
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.RedisError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: connections are refused until ``start`` runs again."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: connections hang, so every command waits for its socket timeout."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    """A test-owned ``redis-server`` on a free port (for outage tests)."""
    binary = shutil.which("redis-server")
    if binary is None:
        redis_missing("redis-server", "not on PATH")
        raise AssertionError("unreachable")
    server = RedisProcess(binary, _free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()
