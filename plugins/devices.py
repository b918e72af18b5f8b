"""How many CUDA devices this machine has, asked without importing a framework or printing."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def cuda_device_count() -> int | None:
    """GPUs the NVIDIA driver reports: 0 when there is no driver, None when only a framework can tell."""
    # NVML, not cuInit: initialising CUDA before uvicorn/gunicorn fork would break it in the workers.
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None if ctypes.util.find_library("cuda") else 0
    if nvml.nvmlInit_v2() != 0:
        return 0
    try:
        count = ctypes.c_uint(0)
        if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return 0
        return int(count.value)
    finally:
        nvml.nvmlShutdown()
