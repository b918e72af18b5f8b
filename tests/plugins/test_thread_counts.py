"""Default thread counts stay inside the CPUs the process may use: its CPU set (affinity) and its
cgroup CPU quota (v2 cpu.max, v1 cfs_quota_us/cfs_period_us), for ONNX Runtime and PyTorch alike."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modelreg.plugins.cpus import cgroup_cpu_quota, usable_cpus

ROOT = Path(__file__).resolve().parents[2]


def v2_root(tmp_path: Path, limits: dict[str, str]) -> Path:
    """A fake cgroup v2 tree: ``limits`` maps a folder ("" is the root) to its cpu.max text."""
    for folder, text in limits.items():
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "cpu.max").write_text(text + "\n")
    return tmp_path


def test_the_cpu_set_bounds_the_count_when_there_is_no_quota(tmp_path: Path) -> None:
    root = v2_root(tmp_path, {"": "max 100000"})
    assert usable_cpus(affinity={0, 1, 2, 3}, cgroup_root=root, proc_cgroup="0::/\n") == 4
    assert usable_cpus(affinity={3}, cgroup_root=root, proc_cgroup="0::/\n") == 1


def test_a_v2_quota_caps_the_cpu_set_rounded_down_and_never_below_one(tmp_path: Path) -> None:
    root = v2_root(tmp_path, {"": "200000 100000"})
    assert usable_cpus(affinity=range(8), cgroup_root=root, proc_cgroup="0::/\n") == 2
    (root / "cpu.max").write_text("150000 100000\n")
    assert usable_cpus(affinity=range(8), cgroup_root=root, proc_cgroup="0::/\n") == 1
    (root / "cpu.max").write_text("50000 100000\n")  # half a CPU: still one thread
    assert usable_cpus(affinity=range(8), cgroup_root=root, proc_cgroup="0::/\n") == 1


def test_a_parent_cgroups_quota_binds_its_children(tmp_path: Path) -> None:
    root = v2_root(tmp_path, {"": "max 100000", "pods": "300000 100000", "pods/web": "max 100000"})
    assert cgroup_cpu_quota(root, "0::/pods/web\n") == 3.0
    assert usable_cpus(affinity=range(16), cgroup_root=root, proc_cgroup="0::/pods/web\n") == 3


def test_a_v1_cfs_quota_counts_and_minus_one_means_none(tmp_path: Path) -> None:
    folder = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text("250000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    lines = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n"
    assert cgroup_cpu_quota(tmp_path, lines) == 2.5
    assert usable_cpus(affinity=range(8), cgroup_root=tmp_path, proc_cgroup=lines) == 2
    (folder / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(tmp_path, lines) is None


def test_no_cgroup_files_means_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path / "absent", "") is None
    assert usable_cpus(affinity={0, 1}, cgroup_root=tmp_path / "absent", proc_cgroup="") == 2


def test_the_real_process_gets_at_least_one_and_at_most_its_cpu_set() -> None:
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


PROBE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import onnxruntime as ort
    import torch
    from modelreg.plugins.base import LoadOptions, Signature
    from modelreg.plugins.onnx_runtime import OnnxRuntime, _session_options
    from modelreg.plugins.pytorch_runtime import TorchRuntime
    from tests.fixtures import tiny_models

    work = Path(sys.argv[1])
    onnx_model = tiny_models.build_onnx(work / "tiny.onnx")
    torch_model = tiny_models.build_torchscript(work / "tiny.pt")
    signature = Signature.from_dict(tiny_models.SIGNATURE)
    OnnxRuntime().load(onnx_model.path, "cpu", LoadOptions(format="onnx"))
    TorchRuntime().load(torch_model.path, "cpu", LoadOptions(format="torchscript", signature=signature))
    print(json.dumps({"ort_intra": _session_options(ort, LoadOptions(format="onnx")).intra_op_num_threads,
                      "torch": torch.get_num_threads()}))
""")


@pytest.mark.slow
def test_under_taskset_one_cpu_means_one_intra_op_thread_in_both_runtimes(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    taskset = shutil.which("taskset")
    assert taskset is not None, "taskset (util-linux) is needed to run a process on one CPU"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([taskset, "-c", "0", sys.executable, "-c", PROBE, str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts == {"ort_intra": 1, "torch": 1}
