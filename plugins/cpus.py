"""How many CPUs this process may really use: its CPU set and its cgroup's CPU quota, whichever is less.

Runtimes size their thread pools from the machine's cores by default (ONNX Runtime even pins its
threads to them), which under ``taskset``, a cpuset or a container CPU limit means more threads
than CPUs: they preempt each other and the event loop, and a throttled cgroup stalls for the rest
of its period. Both built-in runtimes default their intra-op threads to ``usable_cpus()``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(*, affinity: Collection[int] | None = None, cgroup_root: Path = CGROUP_ROOT,
                proc_cgroup: str | None = None) -> int:
    """The CPUs in this process's affinity mask, capped by its cgroup CPU quota (rounded down), at least 1.

    ``affinity``, ``cgroup_root`` and ``proc_cgroup`` (the text of /proc/self/cgroup) stand in for
    the real ones in tests.
    """
    cpus = len(os.sched_getaffinity(0) if affinity is None else affinity)
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, math.floor(quota))
    return max(1, cpus)


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> float | None:
    """The CPU quota (CPUs' worth of time per period) of this process's cgroup and its parents, the
    tightest of them; None when there is none (or no cgroup file system to read)."""
    if proc_cgroup is None:
        try:
            proc_cgroup = PROC_CGROUP.read_text()
        except OSError:
            proc_cgroup = ""
    quotas = [q for q in _v2_quotas(root, proc_cgroup) + _v1_quotas(root, proc_cgroup) if q is not None]
    return min(quotas) if quotas else None


def _v2_quotas(root: Path, proc_cgroup: str) -> list[float | None]:
    # cgroup v2: "0::/some/path"; cpu.max holds "<quota> <period>" or "max <period>". In a container
    # the root is the container's own cgroup ("0::/"), so the root's file counts too.
    path = next((line[3:] for line in proc_cgroup.splitlines() if line.startswith("0::")), "/")
    return [_v2_quota(folder / "cpu.max") for folder in _up_from(root, path)]


def _v2_quota(file: Path) -> float | None:
    try:
        quota, _, period = file.read_text().strip().partition(" ")
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1_quotas(root: Path, proc_cgroup: str) -> list[float | None]:
    # cgroup v1: "4:cpu,cpuacct:/some/path", files cpu.cfs_quota_us (-1: none) and cpu.cfs_period_us.
    path = "/"
    for line in proc_cgroup.splitlines():
        _, _, rest = line.partition(":")
        controllers, _, where = rest.partition(":")
        if "cpu" in controllers.split(","):
            path = where or "/"
    quotas: list[float | None] = []
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        if (root / mount).is_dir():
            quotas += [_v1_quota(folder) for folder in _up_from(root / mount, path)]
    return quotas


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def _up_from(root: Path, path: str) -> list[Path]:
    """``root/path`` and each folder above it up to ``root`` (a parent's quota binds its children)."""
    parts = [p for p in path.strip("/").split("/") if p and p != ".."]
    return [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]
