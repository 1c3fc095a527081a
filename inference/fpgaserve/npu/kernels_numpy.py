"""Pure-numpy kernels of the executor: the portable path, and the reference for the JIT path.

Role: the hot loops (activation quantization, im2col, depthwise convolution, bias + activation,
residual adds)
written with whole-array numpy operations. ``fpgaserve.npu.kernels`` picks these or the numba ones.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fpgaserve.npu.bfp import BfpFormat, quantize

__all__ = [
    "add_activation",
    "bias_activation",
    "depthwise_conv",
    "im2col",
    "quantize_window",
]

F32 = npt.NDArray[np.float32]


def quantize_window(
    x: F32, fmt: BfpFormat, *, stride: int = 1, pads: tuple[int, int, int, int] = (0, 0, 0, 0)
) -> F32:
    """BFP-quantize ``x[:, ::stride, ::stride, :]`` along channels into a new zero-padded buffer."""
    q = quantize(x[:, ::stride, ::stride, :], fmt, axis=-1)
    t, b, left, r = pads
    return np.pad(q, ((0, 0), (t, b), (left, r), (0, 0))) if any(pads) else q


def im2col(xp: F32, *, kh: int, kw: int, stride: int, out_h: int, out_w: int) -> F32:
    """Patches of a padded NHWC input as rows (N*out_h*out_w, kh*kw*C), in (kh, kw, C) order."""
    n, c = xp.shape[0], xp.shape[3]
    cols = np.empty((n, out_h, out_w, kh, kw, c), np.float32)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = xp[
                :, i : i + stride * out_h : stride, j : j + stride * out_w : stride, :
            ]
    return cols.reshape(n * out_h * out_w, kh * kw * c)


def depthwise_conv(
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
) -> F32:
    """Depthwise convolution of an NHWC input with a (kh, kw, C) filter, zero-padded by ``pads``;
    each channel's kh*kw input window is quantized along the taps in blocks of ``fmt.block_size``
    (the taps are that channel's dot product). Then bias and activation, and optionally the BFP
    quantization of the result along channels, in ``output_fmt`` (default ``fmt``: its consumer's)."""
    kh, kw, c = w.shape
    t, b, left, r = pads
    xp = np.pad(x, ((0, 0), (t, b), (left, r), (0, 0))) if any(pads) else x
    n = xp.shape[0]
    patches = np.empty((n, out_h, out_w, c, kh * kw), np.float32)
    for i in range(kh):
        for j in range(kw):
            patches[..., i * kw + j] = xp[
                :, i : i + stride * out_h : stride, j : j + stride * out_w : stride, :
            ]
    q = quantize(patches, fmt, axis=-1)
    out = np.zeros((n, out_h, out_w, c), np.float32)
    for tap in range(kh * kw):  # accumulate tap by tap, in the same order as the JIT kernel
        out += q[..., tap] * w[tap // kw, tap % kw]
    bias_activation(out, bias, activation)
    return quantize(out, output_fmt or fmt, axis=-1) if quantize_output else out


def bias_activation(x: F32, bias: F32 | None, activation: str) -> None:
    """In place: ``x += bias`` then the activation (``linear``, ``relu`` or ``relu6``)."""
    if bias is not None:
        x += bias
    if activation == "relu":
        np.maximum(x, 0.0, out=x)
    elif activation == "relu6":
        np.clip(x, 0.0, 6.0, out=x)


def add_activation(a: F32, b: F32, activation: str) -> F32:
    """``a + b`` then the activation (a residual add; same shapes)."""
    y = np.add(a, b, dtype=np.float32)
    bias_activation(y, None, activation)
    return y
