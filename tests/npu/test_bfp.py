"""BFP numerics (``fpgaserve.npu.bfp``): hand-computed vectors, presets, and error-bound properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fpgaserve.npu.bfp import DEFAULT_FORMAT, FORMATS, BfpFormat, decode, encode, get_format, quantize
from tests.npu.helpers import any_float32, assert_bits_equal, formats, scaled_arrays

# A small format whose arithmetic fits in one's head: exponents in [-8, 7], mantissas in [-7, 7],
# quantum = 2**(e - 2).
T = BfpFormat("t", block_size=8, exponent_bits=4, mantissa_bits=3)


def q(values: list[float], fmt: BfpFormat = T) -> list[float]:
    return quantize(np.array(values, np.float32), fmt).tolist()


# -- hand-computed vectors -------------------------------------------------------------------------

# Block max 4.0: e = 2, quantum = 1, so every value below is a count of quanta.
ROUNDING_INPUT = [4.0, 2.5, -2.5, 0.5, 3.5, -1.5, 0.4, -0.6]


@pytest.mark.parametrize(
    ("rounding", "expected"),
    [
        ("nearest", [4.0, 3.0, -3.0, 1.0, 4.0, -2.0, 0.0, -1.0]),  # ties away from zero
        ("even", [4.0, 2.0, -2.0, 0.0, 4.0, -2.0, 0.0, -1.0]),  # ties to even
        ("zero", [4.0, 2.0, -2.0, 0.0, 3.0, -1.0, 0.0, 0.0]),  # truncation
    ],
)
def test_rounding_modes_on_ties_and_fractions(rounding: str, expected: list[float]) -> None:
    fmt = T.with_rounding(rounding)  # type: ignore[arg-type]
    assert q(ROUNDING_INPUT, fmt) == expected
    packed = encode(np.array(ROUNDING_INPUT, np.float32), fmt)
    assert packed.exponents.tolist() == [2]
    assert packed.mantissas.tolist() == [int(v) for v in expected]


def test_mantissa_has_no_implicit_leading_one() -> None:
    # Max 6.0: e = 2 and 6.0 is stored as 6 quanta (binary 110, its leading one explicit), so the
    # quantum is 2**(e - 2) = 1 and 0.25 flushes; a hidden leading one would give a quantum of 0.5.
    packed = encode(np.array([6.0, 0.25, 1.0, 0, 0, 0, 0, 0], np.float32), T)
    assert packed.mantissas.tolist()[:3] == [6, 0, 1]
    assert q([6.0, 0.25, 1.0]) == [6.0, 0.0, 1.0]


def test_value_that_rounds_past_max_mantissa_saturates_within_block_exponent() -> None:
    # Max 7.9: e = floor(log2 7.9) = 2, quantum 1; 7.9 rounds to 8 > 7, so it saturates to 7 quanta
    # rather than bumping the exponent to 3 (which would represent 8.0 exactly).
    for rounding in ("nearest", "even"):
        packed = encode(np.array([7.9, -7.6, 7.4, 0.0], np.float32), T.with_rounding(rounding))
        assert packed.exponents.tolist() == [2]
        assert packed.mantissas.tolist()[:4] == [7, -7, 7, 0]
    assert q([7.9, -7.6, 7.4, 0.0]) == [7.0, -7.0, 7.0, 0.0]


def test_values_below_half_a_quantum_flush_to_zero() -> None:
    # Max 4.0: quantum 1. 0.49 and 1e-20 vanish; 0.5 survives as one quantum (ties away).
    assert q([4.0, 0.49, -0.3, 1e-20, -1e-30, 0.5]) == [4.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert q([4.0, 0.99, -0.99], T.with_rounding("zero")) == [4.0, 0.0, 0.0]


def test_partial_trailing_block_is_a_block_of_its_own() -> None:
    fmt = BfpFormat("t", block_size=4, exponent_bits=4, mantissa_bits=3)
    # Block 1 [1, 2, 3, 4]: e = 2, quantum 1 (exact). Block 2 [0.7, -0.2]: e = -1, quantum 1/8:
    # 5.6 -> 6 and -1.6 -> -2 quanta. Sharing block 1's exponent would flush both to 1 and 0.
    x = np.array([1, 2, 3, 4, 0.7, -0.2], np.float32)
    assert quantize(x, fmt).tolist() == [1, 2, 3, 4, 0.75, -0.25]
    packed = encode(x, fmt)
    assert packed.exponents.tolist() == [2, -1]
    assert packed.mantissas.tolist() == [1, 2, 3, 4, 6, -2, 0, 0]  # padded to whole blocks
    assert packed.length == 6
    assert decode(packed).shape == (6,)


def test_exponent_clamped_at_the_top_saturates_the_block() -> None:
    # floor(log2 1000) = 9 > emax = 7: e = 7, quantum 2**5 = 32, max magnitude 7 * 32 = 224.
    x = np.array([1000.0, -300.0, 100.0, 20.0], np.float32)
    packed = encode(x, T)
    assert packed.exponents.tolist() == [7]
    assert packed.mantissas.tolist()[:4] == [7, -7, 3, 1]
    assert quantize(x, T).tolist() == [224.0, -224.0, 96.0, 32.0]


def test_exponent_clamped_at_the_bottom_coarsens_the_quantum() -> None:
    # Max 2**-9 would give e = -9; emin = -8 clamps it, so quantum = 2**-10 instead of 2**-11.
    x = np.array([2.0**-12, 1.5 * 2.0**-10, -(2.0**-9), 0.0], np.float32)
    packed = encode(x, T)
    assert packed.exponents.tolist() == [-8]
    assert packed.mantissas.tolist()[:4] == [0, 2, -2, 0]
    assert quantize(x, T).tolist() == [0.0, 2.0**-9, -(2.0**-9), 0.0]
    assert quantize(x, T.with_rounding("zero")).tolist() == [0.0, 2.0**-10, -(2.0**-9), 0.0]


def test_all_zero_block_gets_the_smallest_exponent() -> None:
    packed = encode(np.zeros(8, np.float32), T)
    assert packed.exponents.tolist() == [T.emin]
    assert not packed.mantissas.any()


def test_blocks_along_a_non_last_axis() -> None:
    fmt = BfpFormat("t", block_size=4, exponent_bits=4, mantissa_bits=3)
    # Columns are the reduction axis. Column 0: max 4, quantum 1. Column 1: max 8, quantum 2, so
    # 0.3 -> 0, 1.0 -> 0.5 quanta -> 1 (ties away) -> 2.0, 7.1 -> 3.55 -> 4 -> 8.0.
    x = np.array([[4.0, 8.0], [2.5, 0.3], [-2.5, 1.0], [0.5, 7.1]], np.float32)
    expected = [[4.0, 8.0], [3.0, 0.0], [-3.0, 2.0], [1.0, 8.0]]
    assert quantize(x, fmt, axis=0).tolist() == expected
    packed = encode(x, fmt, axis=0)
    assert packed.mantissas.shape == (2, 4)  # the encoded axis moves last
    assert packed.exponents.tolist() == [[2], [3]]
    # Along rows instead, row 1 [2.5, 0.3] would share e = 1: a different answer.
    assert quantize(x, fmt, axis=-1).tolist() != expected


@pytest.mark.parametrize(
    ("name", "x", "expected"),
    [
        # Max 3.0: e = 1, 2 mantissa bits, quantum 1: 2.5 -> 3 (ties away), 1.4 -> 1, 0.4 -> 0.
        ("ms-fp8", [3.0, 2.5, 1.4, 0.4], [3.0, 3.0, 1.0, 0.0]),
        # 3 bits: quantum 0.5: 2.25 -> 4.5 quanta -> 5 -> 2.5, 1.4 -> 2.8 -> 3 -> 1.5, 0.2 -> 0.
        ("ms-fp9", [3.0, 2.25, 1.4, 0.2], [3.0, 2.5, 1.5, 0.0]),
        ("msfp12", [3.0, 2.25, 1.4, 0.2], [3.0, 2.5, 1.5, 0.0]),
        # Max 1.0: e = 0, 7 bits, quantum 2**-6: 0.01 -> 0.64 -> 1 quantum, 2**-7 is a tie -> 1.
        ("msfp16", [1.0, 0.01, 2.0**-7, 2.0**-8, -0.5], [1.0, 2.0**-6, 2.0**-6, 0.0, -0.5]),
        # int7-bfp: max 1.0, 6 bits, quantum 2**-5: 0.05 -> 1.6 quanta -> 2 -> 2**-4; 2**-6 is a tie -> 1.
        ("int7-bfp", [1.0, 0.05, 2.0**-6, 2.0**-7, -0.75], [1.0, 2.0**-4, 2.0**-5, 0.0, -0.75]),
        # int12-bfp: max 3.0, e = 1, 11 bits, quantum 2**-9: 0.001 -> 0.512 quanta -> 1 -> 2**-9,
        # 2**-11 -> 0.25 quanta -> 0; a 5-bit exponent tops out at 2**15 * 2047/1024: 1e6 saturates.
        ("int12-bfp", [3.0, 0.001, 2.0**-11, -1.5], [3.0, 2.0**-9, 0.0, -1.5]),
        ("int12-bfp", [1e6, 1.0], [2.0**15 * 2047 / 1024, 0.0]),
    ],
)
def test_presets_on_hand_computed_vectors(name: str, x: list[float], expected: list[float]) -> None:
    assert q(x, FORMATS[name]) == expected


@pytest.mark.parametrize(
    ("name", "block", "ebits", "mbits", "bits_per_value"),
    [
        ("ms-fp8", 128, 5, 2, 3 + 5 / 128),
        ("ms-fp9", 128, 5, 3, 4 + 5 / 128),
        ("msfp12", 16, 8, 3, 4.5),
        ("msfp16", 16, 8, 7, 8.5),
        ("int7-bfp", 16, 5, 6, 7 + 5 / 16),
        ("int12-bfp", 16, 5, 11, 12 + 5 / 16),
    ],
)
def test_presets(name: str, block: int, ebits: int, mbits: int, bits_per_value: float) -> None:
    fmt = FORMATS[name]
    assert (fmt.name, fmt.block_size, fmt.exponent_bits, fmt.mantissa_bits) == (name, block, ebits, mbits)
    assert fmt.rounding == "nearest"
    assert fmt.bits_per_value == bits_per_value
    assert get_format(name.upper()) is fmt


def test_default_format_is_int12_bfp() -> None:
    # docs/numerics.md explains the choice; the figures behind it come from bench/fpga.py.
    assert DEFAULT_FORMAT is FORMATS["int12-bfp"]


def test_exponent_and_mantissa_ranges() -> None:
    assert (FORMATS["msfp16"].emin, FORMATS["msfp16"].emax, FORMATS["msfp16"].max_mantissa) == (
        -128,
        127,
        127,
    )
    assert (FORMATS["ms-fp8"].emin, FORMATS["ms-fp8"].emax, FORMATS["ms-fp8"].max_mantissa) == (-16, 15, 3)


def test_storage_bytes_counts_sign_mantissa_and_shared_exponents() -> None:
    # 32 values in 2 blocks of msfp16: 32 * 8 + 2 * 8 bits = 34 bytes; ms-fp8: 32 * 3 + 5 = 101 bits.
    assert FORMATS["msfp16"].storage_bytes(values=32, blocks=2) == 34
    assert FORMATS["ms-fp8"].storage_bytes(values=32, blocks=1) == 13


def test_unknown_format_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="msfp16"):
        get_format("fp4")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"block_size": 0},
        {"exponent_bits": 1},
        {"exponent_bits": 9},
        {"mantissa_bits": 0},
        {"mantissa_bits": 16},
        {"rounding": "up"},
    ],
)
def test_invalid_formats_are_refused(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"block_size": 16, "exponent_bits": 8, "mantissa_bits": 7, **kwargs}
    with pytest.raises(ValueError):
        BfpFormat("bad", **args)  # type: ignore[arg-type]


# -- non-finite values ---------------------------------------------------------------------------


def test_infinity_saturates_with_the_largest_exponent() -> None:
    # +-inf is above every exponent: e = emax = 7, quantum 32; finite neighbours keep that quantum.
    x = np.array([np.inf, 100.0, -np.inf, 1.0], np.float32)
    assert quantize(x, T).tolist() == [224.0, 96.0, -224.0, 0.0]
    assert encode(x, T).exponents.tolist() == [7]


def test_nan_passes_through_quantize_and_does_not_choose_the_exponent() -> None:
    x = np.array([np.nan, 4.0, 2.5, 0.5], np.float32)
    out = quantize(x, T)
    assert np.isnan(out[0])
    assert out[1:].tolist() == [4.0, 3.0, 1.0]
    packed = encode(x, T)  # the packed form has no NaN: it is stored as a zero mantissa
    assert packed.mantissas.tolist()[:4] == [0, 4, 3, 1]
    assert packed.exponents.tolist() == [2]


# -- properties ----------------------------------------------------------------------------------


def _quantum(x: np.ndarray, fmt: BfpFormat) -> np.ndarray:
    """Per element: 2**(e - (m - 1)) for the shared exponent e of its block (last axis)."""
    e = np.repeat(encode(x, fmt).exponents.astype(np.float64), fmt.block_size, axis=-1)[..., : x.shape[-1]]
    return np.exp2(e - (fmt.mantissa_bits - 1))


@st.composite
def cases(draw: st.DrawFn) -> tuple[BfpFormat, np.ndarray]:
    fmt = draw(formats())
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 40)))
    x = draw(st.one_of(scaled_arrays(shape), any_float32(shape)))
    return fmt, x


@settings(max_examples=150, deadline=None)
@given(cases())
def test_error_is_within_a_quantum_and_half_a_quantum_for_nearest(case: tuple[BfpFormat, np.ndarray]) -> None:
    fmt, x = case
    out = quantize(x, fmt).astype(np.float64)
    x64 = x.astype(np.float64)
    quantum = _quantum(x, fmt)
    limit = fmt.max_mantissa * quantum
    err = np.abs(out - x64)
    inside = np.abs(x64) <= limit
    # Within the representable range: half a quantum for nearest/even, under one for truncation.
    if fmt.rounding == "zero":
        assert np.all(err[inside] < quantum[inside])
        assert np.all(np.abs(out) <= np.abs(x64))
    else:
        assert np.all(err[inside] <= quantum[inside] / 2)
    # Beyond it, values saturate at the largest mantissa with their sign.
    assert np.array_equal(out[~inside], np.copysign(limit, x64)[~inside])
    # Unless the exponent was clamped at the top, even saturated values are within one quantum.
    natural = np.floor(np.log2(np.maximum(np.abs(x64).max(initial=0.0), 1e-300)))
    if natural <= fmt.emax:
        assert np.all(err <= quantum)


@settings(max_examples=100, deadline=None)
@given(cases())
def test_block_maximum_keeps_its_leading_one(case: tuple[BfpFormat, np.ndarray]) -> None:
    fmt, x = case
    packed = encode(x, fmt)
    amax = np.abs(packed.mantissas.reshape(*x.shape[:-1], -1, fmt.block_size)).max(axis=-1)
    blocks = np.pad(x.astype(np.float64), ((0, 0), (0, (-x.shape[-1]) % fmt.block_size)))
    bmax = np.abs(blocks.reshape(x.shape[0], -1, fmt.block_size)).max(axis=-1)
    natural = np.floor(np.log2(np.where(bmax > 0, bmax, 1.0)))
    unclamped = (bmax > 0) & (natural >= fmt.emin) & (natural <= fmt.emax)
    assert np.all(amax[unclamped] >= 2 ** (fmt.mantissa_bits - 1))
    assert np.all(amax <= fmt.max_mantissa)


@settings(max_examples=100, deadline=None)
@given(cases())
def test_quantize_is_idempotent(case: tuple[BfpFormat, np.ndarray]) -> None:
    fmt, x = case
    once = quantize(x, fmt)
    assert_bits_equal(quantize(once, fmt), once)


@settings(max_examples=100, deadline=None)
@given(cases())
def test_sign_symmetry(case: tuple[BfpFormat, np.ndarray]) -> None:
    fmt, x = case
    assert_bits_equal(quantize(-x, fmt), -quantize(x, fmt))


@settings(max_examples=100, deadline=None)
@given(cases())
def test_outputs_are_exactly_the_packed_values(case: tuple[BfpFormat, np.ndarray]) -> None:
    fmt, x = case
    packed = encode(x, fmt)
    assert packed.mantissas.dtype == np.int16 and packed.exponents.dtype == np.int8
    assert np.all(np.abs(packed.mantissas) <= fmt.max_mantissa)
    assert np.all((packed.exponents >= fmt.emin) & (packed.exponents <= fmt.emax))
    # mantissa * 2**(e - (m - 1)) in float64 is exactly the float32 output: nothing was rounded.
    mant = packed.mantissas.astype(np.float64)[..., : x.shape[-1]]
    exact = mant * _quantum(x, fmt)
    out = quantize(x, fmt)
    assert np.array_equal(out.astype(np.float64), exact)
    assert_bits_equal(decode(packed), out)
    # Re-encoding the quantized values gives back the same packed tensor.
    again = encode(out, fmt)
    assert np.array_equal(again.mantissas, packed.mantissas)
    assert np.array_equal(again.exponents, packed.exponents)


@settings(max_examples=100, deadline=None)
@given(cases(), st.integers(1, 8))
def test_more_mantissa_bits_never_increase_the_error(case: tuple[BfpFormat, np.ndarray], extra: int) -> None:
    fmt, x = case
    finer = BfpFormat(
        "finer", fmt.block_size, fmt.exponent_bits, min(fmt.mantissa_bits + extra, 15), fmt.rounding
    )
    x64 = x.astype(np.float64)
    coarse_err = np.abs(quantize(x, fmt).astype(np.float64) - x64)
    fine_err = np.abs(quantize(x, finer).astype(np.float64) - x64)
    assert np.all(fine_err <= coarse_err)
