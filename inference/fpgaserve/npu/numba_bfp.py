"""numba BFP quantizers: the building blocks every numba kernel quantizes with.

Role: ``quantize_window`` (a conv's or dense op's input, along channels; ``kernels_numba`` re-exports
it for the executor) and ``quantize_row`` (one channel vector in place, for kernel epilogues: the
depthwise conv's and the conv epilogue's quantization for a pointwise consumer). Results are
bit-identical to the reference quantizer ``fpgaserve.npu.bfp.quantize`` (tested).

They read the shared exponent straight from the float32 bit pattern of the block's largest magnitude
(non-negative floats order like their bit patterns), scale by exact powers of two from a table, and
are specialised per block size; each block's scale is spread over its lanes so that one loop over the
whole pixel vectorises. Blocks of 16 over whole blocks (every MSFP and int-bfp preset on channel
counts that are multiples of 16) find their maxima with a tree of pairwise maxima. Blocks whose scale
leaves float32's normal range (only near the extremes of 8-bit exponents) take an exact float64 path.
The window kernels are single-threaded over a range of output rows; ``quantize_window`` spreads
their rows with ``share.run_rows``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import numba
import numpy as np
import numpy.typing as npt

from fpgaserve.npu.bfp import BfpFormat
from fpgaserve.npu.kernel_cache import seed_numba_cache
from fpgaserve.npu.share import run_rows

__all__ = [
    "ABS_MASK",
    "ACTIVATION_CODE",
    "INF_BITS",
    "MIN_NORMAL",
    "POW2",
    "ROUNDING_CODE",
    "block_slow",
    "quantize_row",
    "quantize_window",
    "window_kernels",
]

# Before any kernel is defined: numba picks each kernel's cache directory when it is decorated.
seed_numba_cache()

F32 = npt.NDArray[np.float32]
ROUNDING_CODE = {"nearest": 0, "even": 1, "zero": 2}
ACTIVATION_CODE = {"linear": 0, "relu": 1, "relu6": 2}
# POW2[k + 150] == 2.0**k as float32 for k in [-126, 127]; the fast path only indexes that range.
POW2 = np.ldexp(np.float32(1.0), np.clip(np.arange(-150, 151), -126, 127)).astype(np.float32)
ABS_MASK = np.uint32(0x7FFFFFFF)
_EXP_MASK = np.uint32(0x7F800000)
MIN_NORMAL = np.uint32(0x00800000)
INF_BITS = np.uint32(0x7F800000)
# Blocks at least this long are quantized block by block (LLVM vectorises those loops); shorter ones
# (16 in every MSFP and int-bfp preset) it unrolls into scalar code, so they go through one loop per pixel.
_LONG_BLOCK = 64


@numba.njit(nogil=True, cache=True, error_model="numpy")
def block_slow(src, dst, mbits, emin, emax, mode):  # type: ignore[no-untyped-def]
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

    @numba.njit(cache=True, nogil=True, error_model="numpy")  # type: ignore[untyped-decorator]
    def kernel(src, bits, stride, ho, wo, dst, oy, ox, mbits, emin, emax, mode, pow2, r0, r1):  # type: ignore[no-untyped-def]
        c = src.shape[3]
        nblk = (c + block - 1) // block
        qmax = np.float32((1 << mbits) - 1)
        # Ties away from zero as floor(a + h) with h the float32 just below 0.5: with h = 0.5 the float32
        # sum rounds a = 0.5 - 2**-25 up to 1. Checked exhaustively for every float32 a < 2**16.
        half = np.float32(0.49999997) if mode == 0 else np.float32(0.0)
        scales = np.empty(c, np.float32)
        invs = np.empty(c, np.float32)
        slow = np.empty(nblk, np.uint8)
        for r in range(r0, r1):  # output rows r0..r1 of all the batch's n * ho
            b = r // ho
            y = r % ho
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
                            nonzero |= brow[lo + i] & ABS_MASK
                    else:  # the partial block (all of C when C < block, as in a stem's RGB input)
                        for i in range(lo, hi):
                            m = max(m, brow[i] & _EXP_MASK)
                            nonzero |= brow[i] & ABS_MASK
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
                            block_slow(srow[lo:hi], drow[lo:hi], mbits, emin, emax, mode)

    return kernel  # type: ignore[no-any-return]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _window16(src, bits, stride, ho, wo, dst, oy, ox, mbits, emin, emax, mode, pow2, r0, r1):  # type: ignore[no-untyped-def]
    """``_window_kernel`` for blocks of 16 when C is a multiple of 16. The block maxima (and the
    "any bit set" of each block, for subnormals) come from a tree of pairwise maxima: each level is a
    stride-2 loop that LLVM vectorises with shuffles, where a loop over one block's 16 lanes stays
    scalar (measured 1.4-2x faster on 64-2,048 channels, one core). Then the per-block scale as float32
    bits, spread over the lanes, and one vector loop over C."""
    c = src.shape[3]
    nblk = c // 16
    qmax = np.float32((1 << mbits) - 1)
    half = np.float32(0.49999997) if mode == 0 else np.float32(0.0)  # see _window_kernel
    t1 = np.empty(c // 2, np.uint32)
    t2 = np.empty(c // 4, np.uint32)
    t3 = np.empty(c // 8, np.uint32)
    nz = np.empty(c // 2, np.uint32)
    scales = np.empty(c, np.float32)
    invs = np.empty(c, np.float32)
    slow = np.empty(nblk, np.uint8)
    sbits = np.empty(nblk, np.uint32)  # float32 bit patterns of 2**qe and 2**-qe per block
    ibits = np.empty(nblk, np.uint32)
    sfloat = sbits.view(np.float32)
    ifloat = ibits.view(np.float32)
    for r in range(r0, r1):  # output rows r0..r1 of all the batch's n * ho
        b = r // ho
        y = r % ho
        for x in range(wo):
            srow = src[b, y * stride, x * stride]
            brow = bits[b, y * stride, x * stride]
            drow = dst[b, y + oy, x + ox]
            for i in range(c // 2):
                u = brow[2 * i]
                v = brow[2 * i + 1]
                t1[i] = max(u & _EXP_MASK, v & _EXP_MASK)
                nz[i] = (u | v) & ABS_MASK
            for i in range(c // 4):
                t2[i] = max(t1[2 * i], t1[2 * i + 1])
                nz[i] = nz[2 * i] | nz[2 * i + 1]
            for i in range(c // 8):
                t3[i] = max(t2[2 * i], t2[2 * i + 1])
                nz[i] = nz[2 * i] | nz[2 * i + 1]
            any_slow = np.uint8(0)
            for k in range(nblk):
                m = max(t3[2 * k], t3[2 * k + 1])
                nonzero = nz[2 * k] | nz[2 * k + 1]
                qe = min(max(np.int64(m >> 23) - 127, emin), emax) - (mbits - 1)
                # The slow-path rule of _window_kernel.
                flag = np.uint8(
                    ((m == 0) & (nonzero != 0)) | (m == _EXP_MASK) | ((m != 0) & ((qe < -126) | (qe > 126)))
                )
                slow[k] = flag
                any_slow |= flag
                qe = min(max(qe, -126), 126)
                sbits[k] = np.uint32(qe + 127) << 23
                ibits[k] = np.uint32(127 - qe) << 23
            for k in range(nblk):
                sk = sfloat[k]
                ik = ifloat[k]
                for i in range(16):
                    scales[16 * k + i] = sk
                    invs[16 * k + i] = ik
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
                        lo = 16 * k
                        block_slow(srow[lo : lo + 16], drow[lo : lo + 16], mbits, emin, emax, mode)


def quantize_window(
    x: F32, fmt: BfpFormat, *, stride: int = 1, pads: tuple[int, int, int, int] = (0, 0, 0, 0)
) -> F32:
    """BFP-quantize ``x[:, ::stride, ::stride, :]`` along channels into a new zero-padded buffer."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, h, w, c = x.shape
    ho, wo = (h + stride - 1) // stride, (w + stride - 1) // stride
    t, b, left, r = pads
    dst = (np.zeros if any(pads) else np.empty)((n, ho + t + b, wo + left + r, c), np.float32)
    kernel = _window16 if fmt.block_size == 16 and c % 16 == 0 else _window_kernel(fmt.block_size)
    bits = x.view(np.uint32)
    mbits, emin, emax, mode = fmt.mantissa_bits, fmt.emin, fmt.emax, ROUNDING_CODE[fmt.rounding]

    def rows(r0: int, r1: int) -> None:
        kernel(x, bits, stride, ho, wo, dst, t, left, mbits, emin, emax, mode, POW2, r0, r1)

    run_rows(rows, n * ho, wo * c)
    return dst


@numba.njit(nogil=True, cache=True, error_model="numpy", inline="always")
def _quantize_block(blk, bits, size, mbits, emin, emax, mode, qmax, half, pow2):  # type: ignore[no-untyped-def]
    """In place: BFP-quantize one block (``bits`` is its uint32 view; ``size`` its length)."""
    m = np.uint32(0)
    for i in range(size):
        m = max(m, bits[i] & ABS_MASK)
    qe = min(max(np.int64(m >> 23) - 127, emin), emax) - (mbits - 1)
    # All-zero blocks (half of them after ReLU) take the fast path: any scale maps zeros to zeros,
    # and a branch on them mispredicts. The slow-path branch is almost never taken.
    if (m >= np.uint32(0x7F800000)) | ((m != 0) & ((m < MIN_NORMAL) | (qe < -126) | (qe > 126))):
        block_slow(blk.copy(), blk, mbits, emin, emax, mode)
        return
    qe = min(max(qe, -126), 126)
    scale = pow2[qe + 150]
    inv = pow2[150 - qe]
    for i in range(size):
        v = blk[i] * inv
        q = np.rint(np.abs(v)) if mode == 1 else np.floor(np.abs(v) + half)
        blk[i] = np.copysign(min(q, qmax) * scale, v)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def quantize_row(row, block, mbits, emin, emax, mode, pow2):  # type: ignore[no-untyped-def]
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


def window_kernels(*, block_sizes: tuple[int, ...] = ()) -> dict[str, Callable[..., None]]:
    """The window quantizers by name: the tree kernel of blocks of 16, and the generic kernel of each
    of ``block_sizes`` (for ``kernels_numba.dispatchers``)."""
    found: dict[str, Callable[..., None]] = {"_window16": _window16}
    for block in block_sizes:
        found[f"_window_kernel[{block}]"] = _window_kernel(block)
    return found
