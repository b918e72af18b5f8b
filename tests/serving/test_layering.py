"""The serving core stays free of the web framework (api/serving imports no FastAPI or Starlette)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["keys", "errors", "codec", "breaker", "first_level", "singleflight", "cache", "reaper"]


def test_the_caching_core_imports_no_web_framework() -> None:
    imports = "; ".join(f"import modelreg.serving.{m}" for m in MODULES)
    check = ("import sys; bad = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette')); "
             "print(bad)")
    result = subprocess.run([sys.executable, "-c", f"{imports}; {check}"], cwd=ROOT, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
