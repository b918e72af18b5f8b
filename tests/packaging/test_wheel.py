"""The built wheel is one namespace, ``modelreg``, and works on its own in a fresh environment.

A user installs the wheel, not this checkout: so the test builds it, installs it (and the echo
plugin, a third-party distribution importing only ``modelreg.plugins``) into a new venv, and runs
``modelreg --help`` and a one-model predict from a folder where the checkout is not importable.
The venv borrows the dependencies of the running environment through a ``.pth`` line instead of
downloading them again; ``importlib.metadata`` prefers the venv's own ``modelreg`` distribution.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a copy of the tracked sources: a build in place would leave build/ and egg-info behind.
    src = out / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        path = ROOT / name
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():  # modelreg/<folder> -> ../<folder>: the tree as it is checked out
            (src / name).symlink_to(os.readlink(path))
        elif path.is_file():
            shutil.copy2(path, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(src)], check=True, capture_output=True, text=True)
    return next(out.glob("modelreg-*.whl"))


def test_the_wheel_installs_one_top_level_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"modelreg"}
    # The migrations travel with it (an installed `modelreg db upgrade` needs every revision).
    assert "modelreg/migrations/versions/0001_initial.py" in names
    assert "modelreg/migrations/script.py.mako" in names
    # The web console's pages and stylesheet travel with the wheel (package data, not only the checkout).
    for page in ("base", "login", "models", "model", "plugins", "confirm", "error"):
        assert f"modelreg/api/ui/templates/{page}.html" in names
    assert "modelreg/api/ui/static/console.css" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(entry_points).decode()
    assert "onnx = modelreg.plugins.onnx_runtime:OnnxRuntime" in text
    assert "modelreg = modelreg.api.cli:app" in text


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("venv")
    env_dir = home / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    # The dependencies come from the running environment, after the venv's own site-packages.
    (purelib / "zz_modelreg_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    echo_wheel = home / "echo"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(echo_wheel), str(ROOT / "tests" / "fixtures" / "echo_plugin")], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel),
                    *map(str, echo_wheel.glob("*.whl"))], check=True, capture_output=True, text=True)
    return env_dir


def _run(venv: Path, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MODELREG_", "PYTHON"))}
    return subprocess.run(list(args), cwd=cwd, env={**clean, **(env or {})}, capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_installed_package_imports_from_the_wheel_not_the_checkout(venv: Path, tmp_path: Path) -> None:
    python = str(venv / "bin" / "python")
    code = ("import modelreg, modelreg.plugins, modelreg.serving, modelreg.api.app, modelreg_echo, sys; "
            "print(modelreg.__file__); print(modelreg.__version__); "
            "print(sorted(m for m in ('api', 'registry', 'plugins', 'serving', 'migrations') if m in sys.modules))")
    result = _run(venv, python, "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    where, version, stray = result.stdout.splitlines()
    assert where.startswith(str(venv)), where
    assert version == "0.1.0"
    assert stray == "[]"


def test_modelreg_help_and_a_one_model_predict_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    cli = str(venv / "bin" / "modelreg")
    help_text = _run(venv, cli, "--help", cwd=tmp_path)
    assert help_text.returncode == 0, help_text.stderr
    assert "models" in help_text.stdout and "serve" in help_text.stdout

    artifact = tmp_path / "tiny.onnx"  # the README's walkthrough model: y = 2x + 1
    made = _run(venv, str(venv / "bin" / "python"), str(ROOT / "examples" / "make_tiny_onnx.py"), "--scale", "2",
                str(artifact), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    port = _free_port()
    env = {"MODELREG_DATA_DIR": str(tmp_path / "data"), "MODELREG_URL": f"http://127.0.0.1:{port}"}
    server = subprocess.Popen([cli, "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path,
                              env={**{k: v for k, v in os.environ.items() if not k.startswith(("MODELREG_", "PYTHON"))},
                                   **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_ready(f"http://127.0.0.1:{port}", server)
        for args in (["models", "create", "tiny", "--runtime", "onnx"], ["upload", "tiny", str(artifact)],
                     ["promote", "tiny", "1"]):
            step = _run(venv, cli, *args, cwd=tmp_path, env=env)
            assert step.returncode == 0, (args, step.stdout, step.stderr)
        answer = httpx.post(f"http://127.0.0.1:{port}/models/tiny/predict", json={"inputs": [[1.0, 2.0, 3.0]]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"] == [[3.0, 5.0, 7.0]]
        assert answer.headers["x-model-version"] == "1"
        console = httpx.get(f"http://127.0.0.1:{port}/ui/login")  # templates found in the installed package
        assert console.status_code == 200 and "Sign in" in console.text
        assert httpx.get(f"http://127.0.0.1:{port}/ui/static/console.css").status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server exited: {server.stderr.read().decode() if server.stderr else ''}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not start within 60 s")
