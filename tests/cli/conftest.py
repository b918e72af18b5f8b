"""The CLI's fixtures: a real uvicorn server in a subprocess, and CliRunner helpers that talk to it."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from modelreg.api.cli import app

ROOT = Path(__file__).resolve().parents[2]
MAX_ARTIFACT_BYTES = 4_000_000
runner = CliRunner(env={"COLUMNS": "240"})  # wide enough that tables never wrap a name


@dataclass(frozen=True)
class Server:
    url: str
    token: str
    data_dir: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hermetic_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any MODELREG_* a developer may have exported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``uvicorn modelreg.api.app:create_app --factory`` on a free port, with its own data folder."""
    if "echo" not in entry_points(group="modelreg.runtimes").names:
        message = "the echo test plugin is not installed: pip install -e tests/fixtures/echo_plugin"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with running_server(tmp_path_factory.mktemp("server"), MAX_ARTIFACT_BYTES) as running:
        yield running


@contextmanager
def running_server(data: Path, max_artifact_bytes: int) -> Iterator[Server]:
    """A real ``modelreg.api.app`` process on a free port with its own data folder and admin token."""
    token, port = secrets.token_urlsafe(24), free_port()
    env = hermetic_env(MODELREG_DATA_DIR=str(data), MODELREG_ADMIN_TOKEN=token,
                       MODELREG_MAX_ARTIFACT_BYTES=str(max_artifact_bytes))
    log = (data / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "modelreg.api.app:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc, data / "server.log")
        yield Server(url=url, token=token, data_dir=data)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def wait_until_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the server did not answer /healthz in 30 s:\n{log.read_text()[-3000:]}")


def cli(server: Server, *args: str, **env: str | None) -> Result:
    """Run ``modelreg ARGS`` against ``server``; the token must never appear in what it prints."""
    base: dict[str, str | None] = {"MODELREG_URL": server.url, "MODELREG_ADMIN_TOKEN": server.token,
                                   "MODELREG_TOKEN": None, "MODELREG_DATABASE_URL": None}
    result = runner.invoke(app, list(args), env={**base, **env})
    assert server.token not in result.output
    return result


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def as_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)
