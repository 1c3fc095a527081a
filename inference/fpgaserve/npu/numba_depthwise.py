"""numba depthwise convolution: each channel's input window quantized along its taps, then the
taps' products summed in float32, fused with padding, bias, activation and the consumer's quantization.

Role: ``depthwise_conv``, re-exported by ``kernels_numba`` for the executor. Bit-identical to
``kernels_numpy.depthwise_conv`` and to the reference quantizer (tested). The kernel is
single-threaded over a range of output rows; ``depthwise_conv`` spreads its rows with
``share.run_rows``.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

from fpgaserve.npu.bfp import BfpFormat
from fpgaserve.npu.numba_bfp import (
    ABS_MASK,
    ACTIVATION_CODE,
    INF_BITS,
    MIN_NORMAL,
    POW2,
    ROUNDING_CODE,
    block_slow,
    quantize_row,
)
from fpgaserve.npu.share import run_rows

__all__ = ["depthwise_conv"]

F32 = npt.NDArray[np.float32]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _depthwise_bfp(  # type: ignore[no-untyped-def]
    x, bits, w, bias, act, stride, pt, pl, block, mbits, emin, emax, mode, qblock, qfmt, pow2, out, r0, r1
):
    """Depthwise conv with its inputs BFP-quantized per output window (the kh*kw taps of a channel
    are its dot product, tiled into blocks of ``block`` taps) and zero padding (``pt``, ``pl``
    before; taps outside the input read zeros), then bias, activation and, when ``qblock`` > 0, the
    BFP quantization of the output along channels for a pointwise consumer, in that consumer's format
    (``qfmt`` = its mantissa bits, emin, emax, rounding code). Vectorised over C. Output rows
    ``r0``..``r1`` of the batch's n * oh."""
    oh, ow, c = out.shape[1], out.shape[2], out.shape[3]
    h, wd = x.shape[1], x.shape[2]
    kh, kw, _ = w.shape
    taps = kh * kw
    nblk = (taps + block - 1) // block
    qmax = np.float32((1 << mbits) - 1)
    half = np.float32(0.49999997) if mode == 0 else np.float32(0.0)  # see numba_bfp._window_kernel
    amax = np.empty((nblk, c), np.uint32)  # per block of taps and channel
    qbits = np.empty((nblk, c), np.uint32)  # float32 bit patterns of 2**qe and 2**-qe, built as integers
    ibits = np.empty((nblk, c), np.uint32)
    slow = np.empty(c, np.uint8)
    window = np.empty(taps, np.float32)
    qwin = np.empty(taps, np.float32)
    for t in range(r0, r1):
        b = t // oh
        y = t % oh
        for xo in range(ow):
            acc = out[b, y, xo]
            # Loops, not slice assignments (``acc[:] = 0``): those compile numba's broadcasting paths.
            for ch in range(c):
                acc[ch] = 0.0
            for k in range(nblk):
                for ch in range(c):
                    amax[k, ch] = 0
            for i in range(kh):
                yy = y * stride + i - pt
                if yy < 0 or yy >= h:
                    continue
                for j in range(kw):
                    xx = xo * stride + j - pl
                    if xx < 0 or xx >= wd:
                        continue
                    row = bits[b, yy, xx]
                    am = amax[(i * kw + j) // block]
                    for ch in range(c):
                        am[ch] = max(am[ch], row[ch] & ABS_MASK)
            for ch in range(c):
                slow[ch] = 0
            any_slow = np.uint8(0)
            for k in range(nblk):
                for ch in range(c):
                    m = amax[k, ch]
                    qe = min(max(np.int64(m >> 23) - 127, emin), emax) - (mbits - 1)
                    # An all-zero window quantizes to zeros at any scale, so it never needs the slow path.
                    # Branch-free: ReLU zeros make a branch here mispredict often (measured 1.7x slower).
                    flag = np.uint8(m != 0) & np.uint8(
                        (m < MIN_NORMAL) | (m >= INF_BITS) | (qe < -126) | (qe > 126)
                    )
                    slow[ch] |= flag
                    any_slow |= flag
                    qe = min(max(qe, -126), 126)
                    qbits[k, ch] = np.uint32(qe + 127) << 23
                    ibits[k, ch] = np.uint32(127 - qe) << 23
            scales = qbits.view(np.float32)
            invs = ibits.view(np.float32)
            for i in range(kh):
                yy = y * stride + i - pt
                if yy < 0 or yy >= h:
                    continue
                for j in range(kw):
                    xx = xo * stride + j - pl
                    if xx < 0 or xx >= wd:
                        continue
                    src = x[b, yy, xx]
                    wt = w[i, j]
                    scale = scales[(i * kw + j) // block]
                    inv = invs[(i * kw + j) // block]
                    if mode == 1:
                        for ch in range(c):
                            v = src[ch] * inv[ch]
                            acc[ch] += np.copysign(min(np.rint(np.abs(v)), qmax) * scale[ch], v) * wt[ch]
                    else:
                        for ch in range(c):
                            v = src[ch] * inv[ch]
                            acc[ch] += (
                                np.copysign(min(np.floor(np.abs(v) + half), qmax) * scale[ch], v) * wt[ch]
                            )
            if any_slow:
                for ch in range(c):
                    if slow[ch] == 0:
                        continue
                    # Rare: redo this channel's window on the exact path.
                    for i in range(kh):
                        for j in range(kw):
                            yy = y * stride + i - pt
                            xx = xo * stride + j - pl
                            inside = 0 <= yy < h and 0 <= xx < wd
                            window[i * kw + j] = x[b, yy, xx, ch] if inside else np.float32(0.0)
                    for lo in range(0, taps, block):
                        hi = min(lo + block, taps)
                        block_slow(window[lo:hi], qwin[lo:hi], mbits, emin, emax, mode)
                    s32 = np.float32(0.0)
                    for i in range(kh):
                        for j in range(kw):
                            s32 += qwin[i * kw + j] * w[i, j, ch]
                    acc[ch] = s32
            for ch in range(c):
                v = acc[ch] + bias[ch]
                if act >= 1:
                    v = max(v, np.float32(0.0))
                if act == 2:
                    v = min(v, np.float32(6.0))
                acc[ch] = v
            if qblock > 0:
                quantize_row(acc, qblock, qfmt[0], qfmt[1], qfmt[2], qfmt[3], pow2)


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
    each channel's kh*kw input window is quantized along the taps in blocks of ``fmt.block_size``.
    Then bias and activation, and optionally the BFP quantization of the result along channels in
    ``output_fmt`` (default ``fmt``)."""
    ofmt = output_fmt or fmt
    qfmt = np.array([ofmt.mantissa_bits, ofmt.emin, ofmt.emax, ROUNDING_CODE[ofmt.rounding]], np.int64)
    x = np.ascontiguousarray(x, dtype=np.float32)
    c = x.shape[3]
    b = np.ascontiguousarray(bias, dtype=np.float32) if bias is not None else np.zeros(c, np.float32)
    out = np.empty((x.shape[0], out_h, out_w, c), np.float32)
    bits = x.view(np.uint32)
    wt = np.ascontiguousarray(w, dtype=np.float32)
    act, qblock = ACTIVATION_CODE[activation], ofmt.block_size if quantize_output else 0
    mode = ROUNDING_CODE[fmt.rounding]

    def rows(r0: int, r1: int) -> None:
        _depthwise_bfp(
            x, bits, wt, b, act, stride, pads[0], pads[2], fmt.block_size, fmt.mantissa_bits, fmt.emin,
            fmt.emax, mode, qblock, qfmt, POW2, out, r0, r1,
        )  # fmt: skip

    run_rows(rows, x.shape[0] * out_h, out_w * c * wt.shape[0] * wt.shape[1])
    return out
