"""The emulated NPU: BFP numerics, devices, programs and the executor (numpy and numba only).

Importing this package first sets two threading defaults, because the executor alternates
OpenBLAS GEMMs with numba-parallel kernels on the same cores: OpenBLAS workers otherwise spin for
~0.1 s after every GEMM and OpenMP workers spin between kernels, each stealing the other's cores
(measured: ResNet-50 batch 1 at 0.55 s instead of 0.07 s on 2 cores). They take effect only if
numpy and numba's thread pool are not loaded yet; explicit environment settings always win.
"""

import os

THREAD_DEFAULTS = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}

for _key, _value in THREAD_DEFAULTS.items():
    os.environ.setdefault(_key, _value)


import importlib  # noqa: E402
from typing import Any  # noqa: E402

# Exports resolve lazily: the device plugin imports fpgaserve.npu.device and must not load numpy.
_EXPORTS = {
    "DEFAULT_FORMAT": "formats", "FORMATS": "formats", "BfpFormat": "formats", "get_format": "formats",
    "DEFAULT_DEVICE_MODEL": "device", "DEVICE_MODELS": "device", "DeviceMemoryError": "device",
    "DeviceModel": "device", "EmulatedDevice": "device", "get_device_model": "device",
    "ExecutionResult": "executor", "Executor": "executor", "InputShapeError": "executor",
    "Program": "program", "ProgramFormatError": "program", "load_program": "program", "save_program": "program",
}  # fmt: skip

__all__ = ["THREAD_DEFAULTS", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fpgaserve.npu' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fpgaserve.npu.{module}"), name)
