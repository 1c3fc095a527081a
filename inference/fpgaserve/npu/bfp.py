"""Block floating point (BFP) numerics of the emulated NPU.

Role: the single definition of how numbers are quantized on the device. Called by the compiler
(weights, once per program) and by the executor (activations, at every matrix-unit input).

The rules follow Microsoft's published BFP formats (Brainwave's ms-fp8/ms-fp9, MSFP12/MSFP16):

* Values are grouped in blocks of ``block_size`` consecutive elements along the dot-product
  (reduction) axis. A trailing partial block is a block of its own (as if zero-padded).
* Each block shares one exponent ``e = floor(log2(max|x|))``, clamped to the signed range of
  ``exponent_bits`` bits: ``[-2**(E-1), 2**(E-1) - 1]``.
* Each element keeps a sign and ``mantissa_bits`` magnitude bits with *no implicit leading one*:
  ``q = sign * mant * 2**(e - (mantissa_bits - 1))`` with ``mant`` in ``[0, 2**mantissa_bits - 1]``.
  So the largest element of a block is represented with its leading one explicit, and elements
  smaller than the block's quantum flush to zero.
* Rounding of ``|x| / quantum`` is one of ``nearest`` (ties away from zero), ``even`` (ties to even)
  or ``zero`` (truncation).
* Saturation: a magnitude that rounds past ``2**mantissa_bits - 1`` saturates to it within the block's
  exponent; the exponent is never bumped. Blocks whose maximum exceeds the exponent range saturate too;
  blocks below it flush towards zero.
* Non-finite values: ``+-inf`` saturates like any value above the exponent range (its block takes the
  largest exponent). NaN does not take part in choosing the block's exponent; ``quantize`` passes it
  through unchanged, while ``encode`` (the packed form has no NaN) stores it as zero.

``quantize`` returns the dequantized float32 values: exactly the numbers the matrix unit multiplies
(every result is exactly representable in float32). ``encode``/``decode`` give the packed
integer form that device memory holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fpgaserve.npu.formats import DEFAULT_FORMAT, FORMATS, ROUNDING_MODES, BfpFormat, Rounding, get_format

__all__ = [
    "DEFAULT_FORMAT",
    "FORMATS",
    "ROUNDING_MODES",
    "BfpFormat",
    "BfpTensor",
    "Rounding",
    "decode",
    "encode",
    "get_format",
    "quantize",
]

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class BfpTensor:
    """Packed BFP data: signed mantissas and one exponent per block along the last axis."""

    mantissas: npt.NDArray[np.int16]  # shape (..., n_blocks * block_size), sign included
    exponents: npt.NDArray[np.int8]  # shape (..., n_blocks)
    length: int  # the unpadded size of the last axis
    fmt: BfpFormat


def _blocked(x: npt.NDArray[np.floating], block: int) -> tuple[npt.NDArray[np.float64], int]:
    """View ``x`` (last axis = reduction axis) as (..., n_blocks, block) in float64, zero-padded."""
    length = x.shape[-1]
    pad = (-length) % block
    x64 = x.astype(np.float64)
    if pad:
        x64 = np.concatenate([x64, np.zeros((*x.shape[:-1], pad))], axis=-1)
    return x64.reshape(*x.shape[:-1], -1, block), length


def _shared_exponents(blocks: npt.NDArray[np.float64], fmt: BfpFormat) -> npt.NDArray[np.int64]:
    amax = np.abs(blocks).max(axis=-1)
    _, exp = np.frexp(amax)  # amax = m * 2**exp with m in [0.5, 1): floor(log2 amax) = exp - 1
    e = np.where(amax > 0, exp.astype(np.int64) - 1, fmt.emin)
    return np.clip(e, fmt.emin, fmt.emax)


def _round(v: npt.NDArray[np.float64], rounding: Rounding) -> npt.NDArray[np.float64]:
    if rounding == "even":
        return np.rint(v)
    if rounding == "zero":
        return np.trunc(v)
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def encode(x: npt.ArrayLike, fmt: BfpFormat, *, axis: int = -1) -> BfpTensor:
    """Quantize ``x`` along ``axis`` into packed mantissas and exponents (``axis`` moved last)."""
    arr = np.moveaxis(np.asarray(x, dtype=np.float32), axis, -1)
    # NaN has no packed encoding: store it as zero; +-inf becomes +-float32 max, which saturates.
    arr = np.nan_to_num(arr, nan=0.0)
    blocks, length = _blocked(arr, fmt.block_size)
    e = _shared_exponents(blocks, fmt)
    quantum_exp = (e - (fmt.mantissa_bits - 1))[..., None]
    mant = _round(np.ldexp(blocks, -quantum_exp), fmt.rounding)
    np.clip(mant, -fmt.max_mantissa, fmt.max_mantissa, out=mant)
    flat = mant.reshape(*arr.shape[:-1], -1)
    return BfpTensor(mantissas=flat.astype(np.int16), exponents=e.astype(np.int8), length=length, fmt=fmt)


def decode(t: BfpTensor) -> FloatArray:
    """The float32 values a packed tensor stands for (last axis = the encoded axis)."""
    b = t.fmt.block_size
    mant = t.mantissas.reshape(*t.mantissas.shape[:-1], -1, b).astype(np.float64)
    quantum_exp = (t.exponents.astype(np.int64) - (t.fmt.mantissa_bits - 1))[..., None]
    values = np.ldexp(mant, quantum_exp).reshape(*t.mantissas.shape[:-1], -1)[..., : t.length]
    return values.astype(np.float32)


def quantize(x: npt.ArrayLike, fmt: BfpFormat, *, axis: int = -1) -> FloatArray:
    """Reference quantizer: BFP round trip of ``x`` along ``axis``; same shape, float32.

    This is the readable definition; the executor's fast kernels are tested bit-exact against it.
    """
    arr = np.asarray(x, dtype=np.float32)
    q = np.moveaxis(decode(encode(arr, fmt, axis=axis)), -1, axis)
    nan = np.isnan(arr)
    return np.where(nan, arr, q) if nan.any() else q
