"""Helpers shared by the NPU tests: bit comparison, strategies, and hand-built programs."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fpgaserve.npu.bfp import ROUNDING_MODES, BfpFormat, BfpTensor, encode
from fpgaserve.npu.program import Op, Program, reduction_axis

F32 = npt.NDArray[np.float32]


def bits(a: npt.ArrayLike) -> npt.NDArray[np.uint32]:
    """float32 bit patterns with -0.0 folded into +0.0.

    The numba kernels keep the sign of a value that flushes to zero while the reference (which goes
    through integer mantissas) gives +0.0; the two zeros are equal in every later computation.
    """
    a32 = np.asarray(a, dtype=np.float32)
    return np.where(a32 == 0, np.float32(0), a32).view(np.uint32)


def assert_bits_equal(actual: npt.ArrayLike, expected: npt.ArrayLike, what: str = "") -> None:
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.shape == e.shape, (what, a.shape, e.shape)
    diff = np.flatnonzero(bits(a) != bits(e))
    assert diff.size == 0, (
        f"{what}: {diff.size} values differ, first at {diff[0]}: {a.flat[diff[0]]!r} != {e.flat[diff[0]]!r}"
    )


@st.composite
def formats(
    draw: st.DrawFn,
    *,
    block_sizes: tuple[int, ...] = (1, 3, 4, 16),
    exponent_bits: tuple[int, ...] = (2, 3, 5, 8),
    mantissa_bits: tuple[int, int] = (1, 10),
) -> BfpFormat:
    return BfpFormat(
        "test",
        block_size=draw(st.sampled_from(block_sizes)),
        exponent_bits=draw(st.sampled_from(exponent_bits)),
        mantissa_bits=draw(st.integers(*mantissa_bits)),
        rounding=draw(st.sampled_from(ROUNDING_MODES)),
    )


# Powers of two that put a block's values in float32's subnormal range, near its top, or in between.
SCALES = (-149, -140, -130, -127, -126, -125, -60, -20, -3, 0, 3, 15, 16, 17, 60, 120, 126, 127)


@st.composite
def scaled_arrays(draw: st.DrawFn, shape: tuple[int, ...]) -> F32:
    """float32 values of one magnitude class (``u * 2**k``), so blocks are not all flushed."""
    u = draw(hnp.arrays(np.float32, shape, elements=st.floats(-2.0, 2.0, width=32, allow_subnormal=False)))
    k = draw(st.sampled_from(SCALES))
    with np.errstate(over="ignore"):
        x = np.ldexp(u, k).astype(np.float32)
    top = np.finfo(np.float32).max
    return np.clip(x, -top, top)  # 2 * 2**127 overflows; keep the inputs finite


def any_float32(shape: tuple[int, ...]) -> st.SearchStrategy[F32]:
    """Arbitrary finite float32 values (hypothesis favours zeros, subnormals and extremes)."""
    return hnp.arrays(np.float32, shape, elements=st.floats(width=32, allow_nan=False, allow_infinity=False))


def pack_weight(w: F32, kind: str, fmt: BfpFormat) -> tuple[BfpTensor, tuple[int, ...]]:
    """A matrix op's weight as the compiler stores it (depthwise as (taps, channels)) and its shape."""
    if kind == "depthwise_conv2d":
        w = w.reshape(-1, w.shape[2])
    return encode(w, fmt, axis=reduction_axis(kind)), tuple(w.shape)


def make_program(
    *,
    fmt: BfpFormat,
    input_shape: tuple[int, ...],
    output_shape: tuple[int, ...],
    ops: list[Op],
    weights: dict[str, tuple[str, F32]],
    biases: dict[str, F32] | None = None,
    constants: dict[str, F32] | None = None,
    name: str = "test-program",
) -> Program:
    """A program as the compiler would build it; ``weights`` maps op name -> (kind, float weight)."""
    packed, shapes = {}, {}
    for op_name, (kind, w) in weights.items():
        packed[op_name], shapes[op_name] = pack_weight(w, kind, fmt)
    return Program(
        name=name,
        fmt=fmt,
        input_name=ops[0].inputs[0],
        input_shape=input_shape,
        output_name=ops[-1].output,
        output_shape=output_shape,
        ops=ops,
        weights=packed,
        weight_shapes=shapes,
        biases=dict(biases or {}),
        constants=dict(constants or {}),
        metadata={"source": "hand-built"},
    )
