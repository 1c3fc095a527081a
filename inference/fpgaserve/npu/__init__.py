"""The emulated NPU: BFP numerics, devices, programs and the executor (numpy and numba only).

Importing this package first sets two threading defaults, because the executor alternates
OpenBLAS GEMMs with numba-parallel kernels on the same cores: OpenBLAS workers otherwise spin for
~0.1 s after every GEMM and OpenMP workers spin between kernels, each stealing the other's cores
(measured: ResNet-50 batch 1 at 0.55 s instead of 0.07 s on 2 cores). They take effect only if
numpy and numba's thread pool are not loaded yet; explicit environment settings always win.
"""

import os
import sys

THREAD_DEFAULTS = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}

for _key, _value in THREAD_DEFAULTS.items():
    os.environ.setdefault(_key, _value)

THREAD_DEFAULTS_APPLIED = "numpy" not in sys.modules

from fpgaserve.npu.bfp import DEFAULT_FORMAT, FORMATS, BfpFormat, get_format  # noqa: E402
from fpgaserve.npu.device import (  # noqa: E402
    DEFAULT_DEVICE_MODEL,
    DEVICE_MODELS,
    DeviceMemoryError,
    DeviceModel,
    EmulatedDevice,
    get_device_model,
)
from fpgaserve.npu.executor import ExecutionResult, Executor, InputShapeError  # noqa: E402
from fpgaserve.npu.program import Program, ProgramFormatError, load_program, save_program  # noqa: E402

__all__ = [
    "DEFAULT_DEVICE_MODEL",
    "DEFAULT_FORMAT",
    "DEVICE_MODELS",
    "FORMATS",
    "THREAD_DEFAULTS",
    "THREAD_DEFAULTS_APPLIED",
    "BfpFormat",
    "DeviceMemoryError",
    "DeviceModel",
    "EmulatedDevice",
    "ExecutionResult",
    "Executor",
    "InputShapeError",
    "Program",
    "ProgramFormatError",
    "get_device_model",
    "get_format",
    "load_program",
    "save_program",
]
