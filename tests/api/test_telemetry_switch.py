"""FastAPI's native OpenTelemetry is off unless MODELREG_OTEL asks for it: with it on, every request
asks whether a provider is configured, and modelreg's own metrics already count every request."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelreg.api.app import create_app
from modelreg.api.settings import Settings


def native_telemetry(settings: Settings) -> dict[str, object] | None:
    app = create_app(settings)
    return getattr(app, "_telemetry", None)  # FastAPI 0.165+; older versions have none to switch off


def test_native_opentelemetry_is_off_by_default_and_on_with_modelreg_otel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = native_telemetry(Settings(data_dir=tmp_path))
    if default is None:
        pytest.skip("this FastAPI has no native OpenTelemetry")
    assert (default["tracing"], default["metrics"], default["logs"]) == (False, False, False)
    monkeypatch.setenv("MODELREG_OTEL", "true")
    asked = native_telemetry(Settings(data_dir=tmp_path))
    assert asked is not None and (asked["tracing"], asked["metrics"], asked["logs"]) == (True, True, True)
