"""Kernel selection: the numba JIT kernels when available, else the pure-numpy ones.

Role: one import point for the executor. ``FPGASERVE_KERNELS=numpy`` forces the portable path
(used by tests to check both paths agree, and on platforms without numba).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from fpgaserve.npu.formats import BfpFormat

    F32 = npt.NDArray[np.float32]

__all__ = ["Kernels", "load_kernels"]

logger = logging.getLogger(__name__)


class Kernels(Protocol):
    """What a kernel module (``kernels_numba``, ``kernels_numpy``) provides to the executor."""

    def quantize_window(
        self, x: F32, fmt: BfpFormat, *, stride: int = 1, pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    ) -> F32: ...

    def im2col(self, xp: F32, *, kh: int, kw: int, stride: int, out_h: int, out_w: int) -> F32: ...

    def depthwise_conv(
        self,
        x: F32,
        w: F32,
        fmt: BfpFormat,
        *,
        stride: int,
        out_h: int,
        out_w: int,
        pads: tuple[int, int, int, int] = (0, 0, 0, 0),
        bias: F32 | None = None,
        activation: str = "linear",
        quantize_output: bool = False,
        output_fmt: BfpFormat | None = None,
    ) -> F32: ...

    def bias_activation(self, x: F32, bias: F32 | None, activation: str) -> None: ...

    def add_activation(self, a: F32, b: F32, activation: str) -> F32: ...


def load_kernels(name: str | None = None) -> Kernels:
    """Return the kernel module named ``name`` ("numba" or "numpy"); default from the environment."""
    choice = (name or os.environ.get("FPGASERVE_KERNELS", "numba")).lower()
    if choice not in ("numba", "numpy"):
        raise ValueError(f"FPGASERVE_KERNELS must be 'numba' or 'numpy', got {choice!r}")
    if choice == "numba":
        try:
            from fpgaserve.npu import kernels_numba

            return kernels_numba
        except ImportError as exc:  # numba missing or broken on this platform
            logger.warning("numba kernels unavailable (%s); using the numpy kernels", exc)
    from fpgaserve.npu import kernels_numpy

    return kernels_numpy
