"""An operator installs runtime plugins with pip; modelreg finds them, and a broken one harms nothing.

modelreg-echo and modelreg-broken are real distributions (tests/fixtures/*_plugin), installed into
the environment as users install plugins; see tests/fixtures/README.md.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from modelreg.plugins.base import PluginError
from modelreg.plugins.devices import cuda_device_count
from modelreg.plugins.discovery import PluginSet, PluginStatus, discover
from tests.fixtures.distributions import WriteDistribution


def by_name(statuses: list[PluginStatus]) -> dict[str, PluginStatus]:
    return {s.name: s for s in statuses}


@pytest.fixture(scope="module")
def installed() -> dict[str, PluginStatus]:
    found = by_name(discover(None))
    if "echo" not in found or "broken" not in found:
        pytest.fail("the fixture plugins are not installed: "
                    "pip install -e tests/fixtures/echo_plugin -e tests/fixtures/broken_plugin", pytrace=False)
    return found


def test_installed_echo_plugin_is_discovered_with_its_distribution(installed: dict[str, PluginStatus]) -> None:
    echo = installed["echo"]
    assert echo.status == "available"
    assert (echo.distribution, echo.version) == ("modelreg-echo", "0.1.0")
    assert echo.entry_point == "modelreg_echo:EchoRuntime"
    assert echo.formats == ("json",)
    assert echo.devices == ("cpu",)
    assert echo.runtime is not None and echo.runtime.name == "echo"


def test_builtin_runtimes_are_entry_points_of_modelreg_itself(installed: dict[str, PluginStatus]) -> None:
    assert installed["onnx"].distribution == "modelreg"
    assert installed["pytorch"].distribution == "modelreg"
    assert installed["onnx"].entry_point == "modelreg.plugins.onnx_runtime:OnnxRuntime"


def test_broken_plugin_is_listed_unavailable_with_its_reason(installed: dict[str, PluginStatus]) -> None:
    broken = installed["broken"]
    assert broken.status == "unavailable: ImportError: modelreg_broken needs libfoo"
    assert broken.runtime is None and not broken.available
    assert broken.distribution == "modelreg-broken"


def test_broken_plugin_does_not_stop_the_others() -> None:
    plugins = PluginSet.discover()
    assert plugins.get("echo").name == "echo"
    assert "echo" in plugins.available() and "broken" not in plugins.available()


def test_asking_for_an_unavailable_runtime_says_why_and_what_there_is() -> None:
    plugins = PluginSet.discover()
    with pytest.raises(PluginError) as caught:
        plugins.get("broken")
    message = str(caught.value)
    assert message.startswith("runtime 'broken' is not installed or not available: "
                              "ImportError: modelreg_broken needs libfoo; available: ")
    assert "echo" in message.rsplit("available: ", 1)[1]


def test_asking_for_an_unknown_runtime_lists_the_available_ones() -> None:
    plugins = PluginSet(discover({"echo"}))
    with pytest.raises(PluginError, match=r"runtime 'tensorflow' is not installed or not available: .*; "
                                          r"available: echo$"):
        plugins.get("tensorflow")


def test_allowlist_keeps_only_the_named_plugins() -> None:
    assert sorted(s.name for s in discover({"echo", "onnx"})) == ["echo", "onnx"]


def test_allowlisted_name_that_nothing_provides_is_reported() -> None:
    statuses = by_name(discover({"echo", "onxx"}))
    assert statuses["onxx"].status == "unavailable: allowed, but no installed plugin has this name"


def test_status_is_json_ready_for_the_admin_api(installed: dict[str, PluginStatus]) -> None:
    data = json.loads(json.dumps(installed["echo"].to_dict()))
    assert data == {"name": "echo", "status": "available", "available": True, "distribution": "modelreg-echo",
                    "version": "0.1.0", "entry_point": "modelreg_echo:EchoRuntime", "formats": ["json"],
                    "devices": ["cpu"]}


def test_discovery_imports_no_framework() -> None:
    if cuda_device_count() != 0:
        pytest.skip("a GPU driver is present: listing devices asks the frameworks")
    code = ("import sys; from modelreg.plugins.discovery import discover; discover(None); "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'onnx') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_plugin_failing_at_import_is_found_through_its_dist_info(write_distribution: WriteDistribution) -> None:
    write_distribution("modelreg-tmp-native", {"native": "modelreg_tmp_native:Runtime"}, {
        "modelreg_tmp_native": 'raise OSError("libbar.so: cannot open shared object file")\n',
    })
    native = by_name(discover(None))["native"]
    assert native.status == "unavailable: OSError: libbar.so: cannot open shared object file"
    assert (native.distribution, native.version) == ("modelreg-tmp-native", "1.0")


def test_plugin_missing_its_framework_says_so(write_distribution: WriteDistribution) -> None:
    write_distribution("modelreg-tmp-needs", {"needs": "modelreg_tmp_needs:Runtime"}, {
        "modelreg_tmp_needs": """
            from modelreg.plugins.base import PluginError

            class Runtime:
                name = "needs"
                formats = frozenset({"onnx"})

                def __init__(self):
                    raise PluginError("tensorrt is not installed")
        """,
    })
    assert by_name(discover(None))["needs"].status == "unavailable: tensorrt is not installed"


def test_plugin_whose_module_is_missing_is_unavailable(write_distribution: WriteDistribution) -> None:
    write_distribution("modelreg-tmp-ghost", {"ghost": "modelreg_tmp_ghost:Runtime"}, {})
    assert by_name(discover(None))["ghost"].status == "unavailable: modelreg_tmp_ghost is not installed"


def test_runtime_named_differently_from_its_entry_point_is_unavailable(
    write_distribution: WriteDistribution,
) -> None:
    write_distribution("modelreg-tmp-misnamed", {"misnamed": "modelreg_tmp_misnamed:Runtime"}, {
        "modelreg_tmp_misnamed": """
            class Runtime:
                name = "other"
                formats = frozenset({"json"})

                def devices(self):
                    return ["cpu"]
        """,
    })
    status = by_name(discover(None))["misnamed"]
    assert status.status == "unavailable: its runtime calls itself 'other', but the entry point is 'misnamed'"


def test_second_plugin_claiming_a_taken_name_is_shown_but_not_used(write_distribution: WriteDistribution) -> None:
    write_distribution("modelreg-tmp-echo", {"echo": "modelreg_tmp_echo:Runtime"}, {
        "modelreg_tmp_echo": """
            class Runtime:
                name = "echo"
                formats = frozenset({"json"})

                def devices(self):
                    return ["cpu"]
        """,
    })
    echoes = [s for s in discover({"echo"}) if s.name == "echo"]
    assert [(s.distribution, s.available) for s in echoes] == [("modelreg-tmp-echo", True), ("modelreg-echo", False)]
    assert echoes[1].status == ("unavailable: another plugin named 'echo' is installed (from modelreg-tmp-echo) "
                                "and is used instead")
    assert PluginSet(echoes).get("echo") is echoes[0].runtime
