"""Kernel selection: the numba JIT kernels when available, else the pure-numpy ones.

Role: one import point for the executor. ``FPGASERVE_KERNELS=numpy`` forces the portable path
(used by tests to check both paths agree, and on platforms without numba).
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

__all__ = ["load_kernels"]

logger = logging.getLogger(__name__)


def load_kernels(name: str | None = None) -> ModuleType:
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
