"""Redis topologies the tests start themselves from the ``redis-server`` binary: a three-master
Cluster and a Sentinel set-up (one master, one replica, three sentinels).

Each server runs on a free port in a temporary folder of its own and is stopped by its PID. Under
CI=true a missing ``redis-server`` or ``redis-cli`` fails the test (``service_missing``).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import _free_port, service_missing

MASTER_NAME = "mymaster"


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        service_missing(name, "not on PATH (Debian: apt-get install redis-server redis-tools)")
        raise AssertionError("unreachable")
    return found


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.3, socket_timeout=1.0,
                       retry=Retry(NoBackoff(), 0))


def _wait(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout}s")
        time.sleep(0.05)


@dataclass
class Server:
    """One redis-server (or sentinel) process on ``port``, its files under ``workdir``."""

    port: int
    workdir: Path
    args: list[str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "server.log").open("ab")
        self.process = subprocess.Popen(self.args, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        def answers() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"redis on port {self.port} exited:\n{self.log()[-2000:]}")
            with _client(self.port) as client:
                return bool(client.ping())
        _wait(answers, f"redis on port {self.port} answers PING")

    def kill(self) -> None:
        """SIGKILL by PID (the test owns this process and nothing else)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def log(self) -> str:
        path = self.workdir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _server_args(binary: str, port: int, *extra: str) -> list[str]:
    return [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--protected-mode", "no", "--loglevel", "notice", *extra]


@dataclass
class RedisCluster:
    """Three masters, no replicas: every slot is served, one third each."""

    nodes: list[Server] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


def start_cluster(workdir: Path, masters: int = 3) -> RedisCluster:
    server, cli = _binary("redis-server"), _binary("redis-cli")
    cluster = RedisCluster()
    try:
        for i in range(masters):
            port = _free_port()
            node_dir = workdir / f"node-{i}"
            # The bus port is a free port of its own: the default (port + 10000) fails above 55535.
            node = Server(port, node_dir, _server_args(
                server, port, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(_free_port()), "--cluster-node-timeout", "2000"))
            cluster.nodes.append(node)
            node.start()
        for node in cluster.nodes:
            node.wait_ready()
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in cluster.nodes),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=30)

        def every_node_sees_ok() -> bool:
            for node in cluster.nodes:
                with _client(node.port) as client:
                    info = client.execute_command("CLUSTER", "INFO")
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    if "cluster_state:ok" not in text:
                        return False
            return True
        _wait(every_node_sees_ok, "the cluster reports cluster_state:ok on every node")
    except BaseException:
        cluster.stop()
        raise
    return cluster


@dataclass
class SentinelSetup:
    """One master, one replica and three sentinels watching them as ``mymaster`` (quorum 2)."""

    master: Server
    replica: Server
    sentinels: list[Server]

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + f"/{MASTER_NAME}"

    def master_port(self) -> int:
        """The port the sentinels name as master now."""
        for sentinel in self.sentinels:
            try:
                with _client(sentinel.port) as client:
                    host, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                    return int(port)
            except redis.RedisError:
                continue
        raise RuntimeError("no sentinel answers")

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.master]:
            server.kill()


def start_sentinel(workdir: Path) -> SentinelSetup:
    server = _binary("redis-server")
    master_port, replica_port = _free_port(), _free_port()
    master = Server(master_port, workdir / "master", _server_args(server, master_port))
    replica = Server(replica_port, workdir / "replica", _server_args(
        server, replica_port, "--replicaof", "127.0.0.1", str(master_port)))
    sentinels: list[Server] = []
    setup = SentinelSetup(master, replica, sentinels)
    try:
        master.start()
        master.wait_ready()
        replica.start()
        replica.wait_ready()

        def replica_in_sync() -> bool:
            with _client(replica_port) as client:
                return client.info("replication").get("master_link_status") == "up"
        _wait(replica_in_sync, "the replica syncs with its master")
        for i in range(3):
            port = _free_port()
            folder = workdir / f"sentinel-{i}"
            folder.mkdir(parents=True)
            # A sentinel rewrites its config file, so each has its own.
            (folder / "sentinel.conf").write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {folder}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 5000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n")
            sentinel = Server(port, folder, [server, str(folder / "sentinel.conf"), "--sentinel"])
            sentinels.append(sentinel)
            sentinel.start()
        for sentinel in sentinels:
            sentinel.wait_ready()

        def sentinels_know_each_other_and_the_replica() -> bool:
            for sentinel in sentinels:
                with _client(sentinel.port) as client:
                    state = client.sentinel_master(MASTER_NAME)
                    if int(state.get("num-other-sentinels", 0)) < 2 or int(state.get("num-slaves", 0)) < 1:
                        return False
            return True
        _wait(sentinels_know_each_other_and_the_replica, "the sentinels discover each other and the replica", 20)
    except BaseException:
        setup.stop()
        raise
    return setup


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A real three-master Redis Cluster for the tests of one module (each uses a key prefix of its own)."""
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_sentinel(tmp_path: Path) -> Iterator[SentinelSetup]:
    """A real Sentinel set-up of the test's own: master, replica, three sentinels."""
    setup = start_sentinel(tmp_path / "sentinel")
    try:
        yield setup
    finally:
        setup.stop()
