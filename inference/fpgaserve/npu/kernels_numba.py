"""numba-compiled kernels of the executor: fused, parallel versions of ``kernels_numpy``.

Role: the fast path. Each kernel does in one pass over memory what numpy needs several for, and
spreads rows over all cores. Results are bit-identical to the numpy kernels (tested).

The BFP quantizer reads the shared exponent straight from the float32 bit pattern of the block's
largest magnitude (non-negative floats order like their bit patterns), scales by exact powers of two
from a table, and is specialised per block size; it spreads each block's scale over its lanes so that
one loop over the whole pixel vectorises. Blocks whose scale leaves float32's normal range (only near
the extremes of 8-bit exponents) take an exact float64 path. Every kernel is cached on disk; images
ship them compiled (``kernel_cache``, ``precompile``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from fpgaserve.npu.bfp import BfpFormat
from fpgaserve.npu.kernel_cache import seed_numba_cache

__all__ = ["bias_activation", "depthwise_conv", "dispatchers", "im2col", "quantize_window"]

# Before any kernel is defined: numba picks each kernel's cache directory when it is decorated.
seed_numba_cache()

F32 = npt.NDArray[np.float32]
_ROUNDING_CODE = {"nearest": 0, "even": 1, "zero": 2}
_ACTIVATION_CODE = {"linear": 0, "relu": 1, "relu6": 2}
# _POW2[k + 150] == 2.0**k as float32 for k in [-126, 127]; the fast path only indexes that range.
_POW2 = np.ldexp(np.float32(1.0), np.clip(np.arange(-150, 151), -126, 127)).astype(np.float32)
_ABS_MASK = np.uint32(0x7FFFFFFF)
_EXP_MASK = np.uint32(0x7F800000)
_MIN_NORMAL = np.uint32(0x00800000)
# Blocks at least this long are quantized block by block (LLVM vectorises those loops); shorter ones
# (16 in every MSFP and int-bfp preset) it unrolls into scalar code, so they go through one loop per pixel.
_LONG_BLOCK = 64


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _block_slow(src, dst, mbits, emin, emax, mode):  # type: ignore[no-untyped-def]
    """Exact float64 path for one block (subnormal maxima, scales outside float32's range, inf, NaN)."""
    amax = 0.0
    for i in range(src.shape[0]):
        a = abs(float(src[i]))
        if a > amax:  # False for NaN: NaN does not choose the exponent (as in ``bfp.encode``)
            amax = a
    e = emin
    if math.isinf(amax):
        e = emax
    elif amax > 0.0:
        e = math.frexp(amax)[1] - 1
    e = min(max(e, emin), emax)
    qe = e - (mbits - 1)
    inv = math.ldexp(1.0, -qe)
    scale = math.ldexp(1.0, qe)
    qmax = float((1 << mbits) - 1)
    for i in range(src.shape[0]):
        if math.isnan(src[i]):  # passed through, as ``bfp.quantize`` does
            dst[i] = src[i]
            continue
        v = float(src[i]) * inv
        # np.floor, not math.floor: numba's math.floor returns an int64, garbage for inf.
        if mode == 1:
            q = np.rint(abs(v))
        elif mode == 2:
            q = np.floor(abs(v))
        else:
            q = np.floor(abs(v) + 0.5)
        dst[i] = np.float32(math.copysign(min(q, qmax) * scale, v))


@cache
def _window_kernel(block: int) -> Callable[..., None]:
    """The quantizer specialised for one block size (a compile-time constant: the exponent loops unroll).

    Blocks shorter than ``_LONG_BLOCK``, in two phases per pixel: each block's scale (and its inverse)
    spread over the block's lanes, then one loop over all C channels, which LLVM vectorises (a loop of
    one block's 16 lanes it only unrolls into scalar code: measured 5x slower on this project's
    machine). Longer blocks (128 in ms-fp8/ms-fp9) loop block by block. Blocks that need the exact path
    are redone after. Cached on disk like every kernel: numba keys a closure's cache entries on its cell contents (the
    block size), so each block size has its own entry in the one index file of ``kernel``."""

    @numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")  # type: ignore[untyped-decorator]
    def kernel(src, bits, stride, ho, wo, dst, oy, ox, mbits, emin, emax, mode, pow2):  # type: ignore[no-untyped-def]
        n, c = src.shape[0], src.shape[3]
        nblk = (c + block - 1) // block
        qmax = np.float32((1 << mbits) - 1)
        # Ties away from zero as floor(a + h) with h the float32 just below 0.5: with h = 0.5 the float32
        # sum rounds a = 0.5 - 2**-25 up to 1. Checked exhaustively for every float32 a < 2**16.
        half = np.float32(0.49999997) if mode == 0 else np.float32(0.0)
        for r in numba.prange(n * ho):  # one output row per task: its scratch is allocated once
            b = r // ho
            y = r % ho
            scales = np.empty(c, np.float32)
            invs = np.empty(c, np.float32)
            slow = np.empty(nblk, np.uint8)
            for x in range(wo):
                srow = src[b, y * stride, x * stride]
                brow = bits[b, y * stride, x * stride]
                drow = dst[b, y + oy, x + ox]
                any_slow = np.uint8(0)
                for k in range(nblk):
                    lo = k * block
                    hi = min(lo + block, c)
                    # floor(log2(max|x|)) is the largest exponent field; maxing the fields alone
                    # vectorises better than maxing magnitudes (measured 2x on blocks of 16).
                    m = np.uint32(0)
                    nonzero = np.uint32(0)
                    if hi - lo == block:
                        for i in range(block):
                            m = max(m, brow[lo + i] & _EXP_MASK)
                            nonzero |= brow[lo + i] & _ABS_MASK
                    else:  # the partial block (all of C when C < block, as in a stem's RGB input)
                        for i in range(lo, hi):
                            m = max(m, brow[i] & _EXP_MASK)
                            nonzero |= brow[i] & _ABS_MASK
                    qe = min(max(np.int64(m >> 23) - 127, emin), emax) - (mbits - 1)
                    # Slow: subnormals only (m == 0 but not all zero), inf/NaN, or a scale outside
                    # float32. All-zero blocks (common after ReLU) stay on the fast path, which maps them
                    # to zeros at any scale: a branch on them would mispredict.
                    flag = np.uint8(
                        ((m == 0) & (nonzero != 0))
                        | (m == _EXP_MASK)
                        | ((m != 0) & ((qe < -126) | (qe > 126)))
                    )
                    slow[k] = flag
                    any_slow |= flag
                    qe = min(max(qe, -126), 126)
                    scale = pow2[qe + 150]
                    inv = pow2[150 - qe]
                    if block >= _LONG_BLOCK:  # a loop this long vectorises by itself
                        if mode == 1:
                            for i in range(lo, hi):
                                v = srow[i] * inv
                                drow[i] = np.copysign(min(np.rint(np.abs(v)), qmax) * scale, v)
                        else:
                            for i in range(lo, hi):
                                v = srow[i] * inv
                                drow[i] = np.copysign(min(np.floor(np.abs(v) + half), qmax) * scale, v)
                    else:
                        for i in range(lo, hi):
                            scales[i] = scale
                            invs[i] = inv
                if block < _LONG_BLOCK:
                    if mode == 1:
                        for i in range(c):
                            v = srow[i] * invs[i]
                            drow[i] = np.copysign(min(np.rint(np.abs(v)), qmax) * scales[i], v)
                    else:
                        for i in range(c):
                            v = srow[i] * invs[i]
                            drow[i] = np.copysign(min(np.floor(np.abs(v) + half), qmax) * scales[i], v)
                if any_slow:
                    for k in range(nblk):
                        if slow[k]:
                            lo = k * block
                            hi = min(lo + block, c)
                            _block_slow(srow[lo:hi], drow[lo:hi], mbits, emin, emax, mode)

    return kernel  # type: ignore[no-any-return]


def quantize_window(
    x: F32, fmt: BfpFormat, *, stride: int = 1, pads: tuple[int, int, int, int] = (0, 0, 0, 0)
) -> F32:
    """BFP-quantize ``x[:, ::stride, ::stride, :]`` along channels into a new zero-padded buffer."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, h, w, c = x.shape
    ho, wo = (h + stride - 1) // stride, (w + stride - 1) // stride
    t, b, left, r = pads
    dst = (np.zeros if any(pads) else np.empty)((n, ho + t + b, wo + left + r, c), np.float32)
    _window_kernel(fmt.block_size)(
        x, x.view(np.uint32), stride, ho, wo, dst, t, left,
        fmt.mantissa_bits, fmt.emin, fmt.emax, _ROUNDING_CODE[fmt.rounding], _POW2,
    )  # fmt: skip
    return dst


@numba.njit(parallel=True, cache=True, nogil=True)
def _im2col(xp, kh, kw, stride, ho, wo, out):  # type: ignore[no-untyped-def]
    c = xp.shape[3]
    for t in numba.prange(out.shape[0]):
        b = t // (ho * wo)
        y = (t // wo) % ho
        x = t % wo
        for i in range(kh):
            for j in range(kw):
                base = (i * kw + j) * c
                out[t, base : base + c] = xp[b, y * stride + i, x * stride + j]


def im2col(xp: F32, *, kh: int, kw: int, stride: int, out_h: int, out_w: int) -> F32:
    """Patches of a padded NHWC input as rows (N*out_h*out_w, kh*kw*C), in (kh, kw, C) order."""
    out = np.empty((xp.shape[0] * out_h * out_w, kh * kw * xp.shape[3]), np.float32)
    _im2col(xp, kh, kw, stride, out_h, out_w, out)
    return out


@numba.njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _quantize_block(blk, bits, size, mbits, emin, emax, mode, qmax, half, pow2):  # type: ignore[no-untyped-def]
    """In place: BFP-quantize one block (``bits`` is its uint32 view; ``size`` its length)."""
    m = np.uint32(0)
    for i in range(size):
        m = max(m, bits[i] & _ABS_MASK)
    qe = min(max(np.int64(m >> 23) - 127, emin), emax) - (mbits - 1)
    # All-zero blocks (half of them after ReLU) take the fast path: any scale maps zeros to zeros,
    # and a branch on them mispredicts. The slow-path branch is almost never taken.
    if (m >= np.uint32(0x7F800000)) | ((m != 0) & ((m < _MIN_NORMAL) | (qe < -126) | (qe > 126))):
        _block_slow(blk.copy(), blk, mbits, emin, emax, mode)
        return
    qe = min(max(qe, -126), 126)
    scale = pow2[qe + 150]
    inv = pow2[150 - qe]
    for i in range(size):
        v = blk[i] * inv
        q = np.rint(np.abs(v)) if mode == 1 else np.floor(np.abs(v) + half)
        blk[i] = np.copysign(min(q, qmax) * scale, v)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _quantize_row(row, block, mbits, emin, emax, mode, pow2):  # type: ignore[no-untyped-def]
    """In place: BFP-quantize one channel vector in blocks of ``block`` (the rules of
    ``_window_kernel``; used in kernel epilogues)."""
    c = row.shape[0]
    bits = row.view(np.uint32)
    qmax = np.float32((1 << mbits) - 1)
    half = np.float32(0.49999997) if mode == 0 else np.float32(0.0)  # see _window_kernel
    lo = 0
    if block == 16:  # every MSFP and int-bfp preset: a constant trip count lets the loops vectorise (3x)
        while lo + 16 <= c:
            _quantize_block(
                row[lo : lo + 16], bits[lo : lo + 16], 16, mbits, emin, emax, mode, qmax, half, pow2
            )
            lo += 16
    while lo < c:
        hi = min(lo + block, c)
        _quantize_block(row[lo:hi], bits[lo:hi], hi - lo, mbits, emin, emax, mode, qmax, half, pow2)
        lo = hi


@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _depthwise_bfp(  # type: ignore[no-untyped-def]
    x, bits, w, bias, act, stride, pt, pl, block, mbits, emin, emax, mode, qblock, qfmt, pow2, out
):
    """Depthwise conv with its inputs BFP-quantized per output window (the kh*kw taps of a channel
    are its dot product, tiled into blocks of ``block`` taps) and zero padding (``pt``, ``pl``
    before; taps outside the input read zeros), then bias, activation and, when ``qblock`` > 0, the
    BFP quantization of the output along channels for a pointwise consumer, in that consumer's format
    (``qfmt`` = its mantissa bits, emin, emax, rounding code). Vectorised over C."""
    n, oh, ow, c = out.shape
    h, wd = x.shape[1], x.shape[2]
    kh, kw, _ = w.shape
    taps = kh * kw
    nblk = (taps + block - 1) // block
    qmax = np.float32((1 << mbits) - 1)
    half = np.float32(0.49999997) if mode == 0 else np.float32(0.0)  # see _window_kernel
    for t in numba.prange(n * oh):
        b = t // oh
        y = t % oh
        amax = np.empty((nblk, c), np.uint32)  # per block of taps and channel
        qbits = np.empty((nblk, c), np.uint32)  # float32 bit patterns of 2**qe and 2**-qe, built as integers
        ibits = np.empty((nblk, c), np.uint32)
        slow = np.empty(c, np.uint8)
        window = np.empty(taps, np.float32)
        qwin = np.empty(taps, np.float32)
        for xo in range(ow):
            acc = out[b, y, xo]
            acc[:] = 0.0
            amax[:, :] = 0
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
                        am[ch] = max(am[ch], row[ch] & _ABS_MASK)
            slow[:] = 0
            any_slow = np.uint8(0)
            for k in range(nblk):
                for ch in range(c):
                    m = amax[k, ch]
                    qe = min(max(np.int64(m >> 23) - 127, emin), emax) - (mbits - 1)
                    # An all-zero window quantizes to zeros at any scale, so it never needs the slow path.
                    # Branch-free: ReLU zeros make a branch here mispredict often (measured 1.7x slower).
                    flag = np.uint8(m != 0) & np.uint8(
                        (m < _MIN_NORMAL) | (m >= np.uint32(0x7F800000)) | (qe < -126) | (qe > 126)
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
                        _block_slow(window[lo:hi], qwin[lo:hi], mbits, emin, emax, mode)
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
                _quantize_row(acc, qblock, qfmt[0], qfmt[1], qfmt[2], qfmt[3], pow2)


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
    qfmt = np.array([ofmt.mantissa_bits, ofmt.emin, ofmt.emax, _ROUNDING_CODE[ofmt.rounding]], np.int64)
    x = np.ascontiguousarray(x, dtype=np.float32)
    c = x.shape[3]
    b = np.ascontiguousarray(bias, dtype=np.float32) if bias is not None else np.zeros(c, np.float32)
    out = np.empty((x.shape[0], out_h, out_w, c), np.float32)
    _depthwise_bfp(
        x, x.view(np.uint32), np.ascontiguousarray(w, dtype=np.float32), b, _ACTIVATION_CODE[activation],
        stride, pads[0], pads[2], fmt.block_size, fmt.mantissa_bits, fmt.emin, fmt.emax,
        _ROUNDING_CODE[fmt.rounding], ofmt.block_size if quantize_output else 0, qfmt, _POW2, out,
    )  # fmt: skip
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def _bias_act(x, bias, has_bias, act):  # type: ignore[no-untyped-def]
    rows, c = x.shape
    for r in numba.prange(rows):
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
    _bias_act(x.reshape(-1, c), b, bias is not None, _ACTIVATION_CODE[activation])


def dispatchers(*, block_sizes: tuple[int, ...] = ()) -> dict[str, Any]:
    """The numba dispatchers of the kernels the wrappers above call, by name (for their compile and
    cache statistics): the module's, and the window quantizer of each of ``block_sizes``."""
    found: dict[str, Any] = {
        name: obj for name, obj in globals().items() if isinstance(obj, numba.core.registry.CPUDispatcher)
    }
    for block in block_sizes:
        found[f"_window_kernel[{block}]"] = _window_kernel(block)
    return found
