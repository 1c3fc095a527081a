"""numba-compiled kernels of the executor: fused versions of ``kernels_numpy``.

Role: the fast path, and the one kernel module the executor sees (``fpgaserve.npu.kernels``). Each
kernel does in one pass over memory what numpy needs several for. The kernels are single-threaded
``@njit(nogil=True)`` loops over a range of output rows; each wrapper hands its rows to
``share.run_rows``, which cuts them into tiles shared with the GEMMs' helper threads when a batch of
one spreads. Not numba's ``prange``: its barriers collapsed under load, and parfor lowering made
a cold compile 2-3x longer (docs/benchmarks.md, "Kernels without prange").
Results are bit-identical to the numpy kernels (tested). The BFP quantizers live in ``numba_bfp``,
the depthwise convolution in ``numba_depthwise``; this module re-exports them beside the kernels of
GEMM operands and results (im2col, bias + activation, residual adds).
Every kernel is cached on disk; images ship them compiled (``kernel_cache``, ``precompile``).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from fpgaserve.npu.numba_bfp import ACTIVATION_CODE, quantize_window, window_kernels
from fpgaserve.npu.numba_depthwise import depthwise_conv
from fpgaserve.npu.share import run_rows

__all__ = [
    "add_activation",
    "bias_activation",
    "depthwise_conv",
    "dispatchers",
    "im2col",
    "quantize_window",
]

F32 = npt.NDArray[np.float32]


@numba.njit(cache=True, nogil=True)
def _im2col(xp, kh, kw, stride, ho, wo, out, r0, r1):  # type: ignore[no-untyped-def]
    c = xp.shape[3]
    for t in range(r0, r1):
        b = t // (ho * wo)
        y = (t // wo) % ho
        x = t % wo
        row = out[t]
        for i in range(kh):
            for j in range(kw):
                base = (i * kw + j) * c
                src = xp[b, y * stride + i, x * stride + j]
                # A loop, not a slice assignment: numba compiles the latter with its broadcasting and
                # shape-error paths (2.5 s of a cold compile, measured), for the same copy.
                for ch in range(c):
                    row[base + ch] = src[ch]


def im2col(xp: F32, *, kh: int, kw: int, stride: int, out_h: int, out_w: int) -> F32:
    """Patches of a padded NHWC input as rows (N*out_h*out_w, kh*kw*C), in (kh, kw, C) order."""
    out = np.empty((xp.shape[0] * out_h * out_w, kh * kw * xp.shape[3]), np.float32)

    def rows(r0: int, r1: int) -> None:
        _im2col(xp, kh, kw, stride, out_h, out_w, out, r0, r1)

    run_rows(rows, out.shape[0], out.shape[1])
    return out


@numba.njit(cache=True, nogil=True)
def _bias_act(x, bias, has_bias, act, r0, r1):  # type: ignore[no-untyped-def]
    c = x.shape[1]
    for r in range(r0, r1):
        for i in range(c):
            v = x[r, i]
            if has_bias:
                v += bias[i]
            if act >= 1:
                v = max(v, np.float32(0.0))
            if act == 2:
                v = min(v, np.float32(6.0))
            x[r, i] = v


def bias_activation(x: F32, bias: F32 | None, activation: str) -> None:
    """In place: ``x += bias`` then the activation (``linear``, ``relu`` or ``relu6``)."""
    if bias is None and activation == "linear":
        return  # nothing to do; skip a whole pass over memory
    c = x.shape[-1]
    b: Any = bias if bias is not None else np.zeros(c, np.float32)
    x2, has_bias, act = x.reshape(-1, c), bias is not None, ACTIVATION_CODE[activation]

    def rows(r0: int, r1: int) -> None:
        _bias_act(x2, b, has_bias, act, r0, r1)

    run_rows(rows, x2.shape[0], c)


@numba.njit(cache=True, nogil=True)
def _add_act(a, b, act, out, r0, r1):  # type: ignore[no-untyped-def]
    c = out.shape[1]
    for r in range(r0, r1):
        for i in range(c):
            v = a[r, i] + b[r, i]
            if act >= 1:
                v = max(v, np.float32(0.0))
            if act == 2:
                v = min(v, np.float32(6.0))
            out[r, i] = v


def add_activation(a: F32, b: F32, activation: str) -> F32:
    """``a + b`` then the activation, in one pass (a residual add); numpy's broadcasting add and a
    second pass when the shapes differ."""
    if a.shape != b.shape:
        y: F32 = np.add(a, b, dtype=np.float32)
        bias_activation(y, None, activation)
        return y
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    out = np.empty_like(a)
    c = a.shape[-1]
    a2, b2, out2, act = a.reshape(-1, c), b.reshape(-1, c), out.reshape(-1, c), ACTIVATION_CODE[activation]

    def rows(r0: int, r1: int) -> None:
        _add_act(a2, b2, act, out2, r0, r1)

    run_rows(rows, out2.shape[0], 3 * c)
    return out


def dispatchers(*, block_sizes: tuple[int, ...] = ()) -> dict[str, Any]:
    """The numba dispatchers of the kernels the wrappers call, by name (for their compile and cache
    statistics): this module's and its helpers' (``numba_bfp``, ``numba_depthwise``), and the window
    quantizer of each of ``block_sizes``."""
    from fpgaserve.npu import numba_bfp, numba_depthwise

    found: dict[str, Any] = {}
    for module in (numba_bfp, numba_depthwise, globals()):
        names = module if isinstance(module, dict) else vars(module)
        for name, obj in names.items():
            if isinstance(obj, numba.core.registry.CPUDispatcher):
                found[name] = obj
    found.update(window_kernels(block_sizes=block_sizes))
    return found
