"""The echo fixture plugin behaves as the serving and API tests rely on: offsets, counts, delays, failures."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from modelreg.plugins.base import LoadedModel, LoadOptions, PluginError
from modelreg.plugins.discovery import PluginSet

modelreg_echo = pytest.importorskip("modelreg_echo")


def load(tmp_path: Path, **config: object) -> LoadedModel:
    path = tmp_path / f"echo-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(config))
    return PluginSet.discover({"echo"}).get("echo").load(path, "cpu", LoadOptions(format="json"))


@pytest.fixture(autouse=True)
def fresh_stats() -> None:
    modelreg_echo.STATS.reset()


def test_each_version_answers_with_its_own_offset(tmp_path: Path) -> None:
    x = np.array([[1.0, 2.0]], dtype=np.float32)
    assert load(tmp_path, offset=1.0).predict({"x": x})["y"].tolist() == [[2.0, 3.0]]
    assert load(tmp_path, offset=2.0).predict({"x": x})["y"].tolist() == [[3.0, 4.0]]


def test_calls_and_rows_are_counted_across_threads(tmp_path: Path) -> None:
    model = load(tmp_path)
    threads = [threading.Thread(target=model.predict, args=({"x": np.zeros((3, 2), np.float32)},)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (modelreg_echo.STATS.calls, modelreg_echo.STATS.rows) == (8, 24)


def test_calls_are_appended_to_the_counter_file_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = tmp_path / "calls.txt"
    monkeypatch.setenv(modelreg_echo.COUNTER_FILE_ENV, str(counter))
    model = load(tmp_path, offset=5.0)
    model.predict({"x": np.zeros((2, 1), np.float32)})
    model.predict({"x": np.zeros((1, 1), np.float32)})
    assert [line.split()[1:] for line in counter.read_text().splitlines()] == [["2", "5.0"], ["1", "5.0"]]


def test_delay_ms_makes_each_call_take_that_long(tmp_path: Path) -> None:
    model = load(tmp_path, delay_ms=50)
    started = time.perf_counter()
    model.predict({"x": np.zeros((1, 1), np.float32)})
    assert time.perf_counter() - started >= 0.05


def test_fail_makes_predict_raise_after_counting_the_call(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="told to fail"):
        load(tmp_path, fail=True).predict({"x": np.zeros((1, 1), np.float32)})
    assert modelreg_echo.STATS.calls == 1


def test_width_fixes_the_second_axis(tmp_path: Path) -> None:
    model = load(tmp_path, width=2)
    assert model.signature.inputs[0].shape == (None, 2)
    with pytest.raises(PluginError, match=r"input 'x' has shape \[1, 3\]; the model takes \[\?, 2\]"):
        model.predict({"x": np.zeros((1, 3), np.float32)})


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="keys are delay_ms, fail, fail_on, hang_ms, hang_on, offset, width"):
        load(tmp_path, offest=1.0)
