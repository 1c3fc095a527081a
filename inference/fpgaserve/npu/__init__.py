"""The emulated NPU: BFP numerics, devices, programs and the executor (numpy and numba only).

Importing this package first sets two threading defaults. They date from when the executor
alternated multi-threaded OpenBLAS GEMMs with numba-parallel kernels on the same cores: OpenBLAS
workers spun for ~0.1 s after every GEMM and OpenMP workers between kernels, each stealing the
other's cores (measured: ResNet-50 batch 1 at 0.55 s instead of 0.07 s on 2 cores). The executor now
uses neither pool (single-threaded GEMM tiles and numba kernels, shared by ``share.py``); the
defaults still keep other numpy or numba-parallel code in the process from spinning. They take
effect only if numpy and numba's thread pool are not loaded yet; explicit environment settings
always win.
"""

import os

THREAD_DEFAULTS = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}

for _key, _value in THREAD_DEFAULTS.items():
    os.environ.setdefault(_key, _value)


import importlib  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

# Exports resolve lazily: the device plugin imports fpgaserve.npu.device and must not load numpy.
_EXPORTS = {
    "DEFAULT_FORMAT": "formats", "FORMATS": "formats", "BfpFormat": "formats", "get_format": "formats",
    "DEFAULT_DEVICE_MODEL": "device", "DEVICE_MODELS": "device", "DeviceMemoryError": "device",
    "DeviceModel": "device", "EmulatedDevice": "device", "get_device_model": "device",
    "ExecutionResult": "executor", "Executor": "executor", "InputShapeError": "executor",
    "Program": "program", "ProgramFormatError": "program", "load_program": "program", "save_program": "program",
}  # fmt: skip

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and readers
    from fpgaserve.npu.device import DEFAULT_DEVICE_MODEL as DEFAULT_DEVICE_MODEL
    from fpgaserve.npu.device import DEVICE_MODELS as DEVICE_MODELS
    from fpgaserve.npu.device import DeviceMemoryError as DeviceMemoryError
    from fpgaserve.npu.device import DeviceModel as DeviceModel
    from fpgaserve.npu.device import EmulatedDevice as EmulatedDevice
    from fpgaserve.npu.device import get_device_model as get_device_model
    from fpgaserve.npu.executor import ExecutionResult as ExecutionResult
    from fpgaserve.npu.executor import Executor as Executor
    from fpgaserve.npu.executor import InputShapeError as InputShapeError
    from fpgaserve.npu.formats import DEFAULT_FORMAT as DEFAULT_FORMAT
    from fpgaserve.npu.formats import FORMATS as FORMATS
    from fpgaserve.npu.formats import BfpFormat as BfpFormat
    from fpgaserve.npu.formats import get_format as get_format
    from fpgaserve.npu.program import Program as Program
    from fpgaserve.npu.program import ProgramFormatError as ProgramFormatError
    from fpgaserve.npu.program import load_program as load_program
    from fpgaserve.npu.program import save_program as save_program

__all__ = ["THREAD_DEFAULTS", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fpgaserve.npu' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fpgaserve.npu.{module}"), name)
