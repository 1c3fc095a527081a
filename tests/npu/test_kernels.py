"""The executor's kernels: numba and numpy agree bit for bit, and ``quantize_window`` is ``bfp.quantize``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fpgaserve.npu.bfp import FORMATS, ROUNDING_MODES, BfpFormat, quantize
from fpgaserve.npu.kernels import load_kernels
from tests.npu.helpers import any_float32, assert_bits_equal, formats, scaled_arrays

NUMPY = load_kernels("numpy")
NUMBA = load_kernels("numba")


def test_both_kernel_sets_are_really_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert NUMPY.__name__ == "fpgaserve.npu.kernels_numpy"
    assert NUMBA.__name__ == "fpgaserve.npu.kernels_numba"  # not a silent numpy fallback
    monkeypatch.setenv("FPGASERVE_KERNELS", "numpy")
    assert load_kernels() is NUMPY
    monkeypatch.setenv("FPGASERVE_KERNELS", "NUMBA")
    assert load_kernels() is NUMBA
    with pytest.raises(ValueError, match="FPGASERVE_KERNELS"):
        load_kernels("cuda")


def reference_window(
    x: np.ndarray, fmt: BfpFormat, stride: int, pads: tuple[int, int, int, int]
) -> np.ndarray:
    """``bfp.quantize`` along channels of the strided input, then zero padding: the specification."""
    t, b, left, r = pads
    q = quantize(x[:, ::stride, ::stride, :], fmt, axis=-1)
    return np.pad(q, ((0, 0), (t, b), (left, r), (0, 0)))


@st.composite
def windows(draw: st.DrawFn) -> tuple[np.ndarray, BfpFormat, int, tuple[int, int, int, int]]:
    fmt = draw(formats(block_sizes=(1, 3, 16, 128), exponent_bits=(2, 5, 8), mantissa_bits=(1, 15)))
    c = draw(st.sampled_from([1, 2, 3, 5, 16, 17, 33, 128, 131]))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 4)), c)
    x = draw(st.one_of(scaled_arrays(shape), any_float32(shape)))
    stride = draw(st.integers(1, 3))
    pads = draw(st.tuples(*[st.integers(0, 2)] * 4))
    return x, fmt, stride, pads


@settings(max_examples=200, deadline=None)
@given(windows())
def test_quantize_window_matches_the_reference(
    case: tuple[np.ndarray, BfpFormat, int, tuple[int, ...]],
) -> None:
    x, fmt, stride, pads = case
    expected = reference_window(x, fmt, stride, pads)  # type: ignore[arg-type]
    for kernels in (NUMPY, NUMBA):
        out = kernels.quantize_window(x, fmt, stride=stride, pads=pads)
        assert out.dtype == np.float32
        assert_bits_equal(out, expected, kernels.__name__)


@pytest.mark.parametrize("block", [3, 16, 128])
@pytest.mark.parametrize("rounding", ROUNDING_MODES)
def test_rounding_just_below_half_a_quantum(block: int, rounding: str) -> None:
    # Block max 1.0 in an 8-bit-exponent, 7-bit format: quantum 2**-6. x = (1 - 2**-24) * 2**-7 is
    # 0.5 - 2**-25 quanta and must round to 0 in every mode; a float32 floor(a + 0.5) gives 1 quantum.
    fmt = BfpFormat("t", block_size=block, exponent_bits=8, mantissa_bits=7, rounding=rounding)  # type: ignore[arg-type]
    pattern = [1.0, (1 - 2.0**-24) * 2.0**-7]
    x = np.zeros((1, 1, 2, block + 3), np.float32)  # one full block and a partial one
    x[..., :2] = pattern
    x[..., block : block + 2] = pattern
    x[0, 0, 1] = -x[0, 0, 0]
    expected = reference_window(x, fmt, 1, (0, 0, 0, 0))
    assert not expected[..., [1, block + 1]].any()
    for kernels in (NUMPY, NUMBA):
        assert_bits_equal(kernels.quantize_window(x, fmt), expected, kernels.__name__)


@pytest.mark.parametrize("fmt", list(FORMATS.values()), ids=list(FORMATS))
def test_non_finite_values_agree(fmt: BfpFormat) -> None:
    x = np.zeros((1, 1, 3, 2 * fmt.block_size), np.float32)
    x[0, 0, 0, :3] = [np.inf, 3.0, -1000.0]  # +inf saturates its block
    x[0, 0, 1, :3] = [-np.inf, np.nan, 1.0]
    x[0, 0, 2, :3] = [np.nan, 3.0, -1000.0]  # NaN passes through; the rest quantizes as without it
    x[0, 0, :, fmt.block_size :] = 0.5  # the next block is unaffected
    expected = reference_window(x, fmt, 1, (0, 0, 0, 0))
    assert np.isnan(expected[0, 0, 2, 0]) and np.isnan(expected[0, 0, 1, 1])
    assert expected[0, 0, 0, 0] == fmt.max_mantissa * 2.0 ** (fmt.emax - fmt.mantissa_bits + 1)
    assert_bits_equal(expected[0, 0, 2, 1:], quantize(np.nan_to_num(x[0, 0, 2]), fmt)[1:])
    for kernels in (NUMPY, NUMBA):
        assert_bits_equal(kernels.quantize_window(x, fmt), expected, kernels.__name__)


def test_quantize_window_does_not_modify_its_input() -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, 3, 20)).astype(np.float32)
    before = x.copy()
    for kernels in (NUMPY, NUMBA):
        kernels.quantize_window(x, FORMATS["msfp12"], stride=2, pads=(1, 1, 1, 1))
    assert np.array_equal(x, before)


def test_quantize_window_accepts_non_contiguous_input() -> None:
    x = np.random.default_rng(1).standard_normal((1, 4, 4, 34)).astype(np.float32)[:, :, :, 1:]
    expected = reference_window(x, FORMATS["msfp16"], 2, (0, 1, 0, 1))
    for kernels in (NUMPY, NUMBA):
        assert_bits_equal(
            kernels.quantize_window(x, FORMATS["msfp16"], stride=2, pads=(0, 1, 0, 1)), expected
        )


# -- im2col, depthwise, bias + activation ------------------------------------------------------------


@st.composite
def patches(draw: st.DrawFn) -> tuple[np.ndarray, int, int, int, int, int]:
    kh, kw, stride = draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 2))
    out_h, out_w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = (out_h - 1) * stride + kh, (out_w - 1) * stride + kw
    n, c = draw(st.integers(1, 2)), draw(st.sampled_from([1, 3, 8]))
    extra = draw(st.integers(0, 1))  # rows/columns beyond the last window are ignored
    xp = np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal((n, h + extra, w + extra, c))
    return xp.astype(np.float32), kh, kw, stride, out_h, out_w


@settings(max_examples=60, deadline=None)
@given(patches())
def test_im2col_matches_a_loop(case: tuple[np.ndarray, int, int, int, int, int]) -> None:
    xp, kh, kw, stride, out_h, out_w = case
    rows = [
        xp[b, y * stride : y * stride + kh, x * stride : x * stride + kw, :].reshape(-1)
        for b in range(xp.shape[0])
        for y in range(out_h)
        for x in range(out_w)
    ]
    expected = np.stack(rows)
    for kernels in (NUMPY, NUMBA):
        out = kernels.im2col(xp, kh=kh, kw=kw, stride=stride, out_h=out_h, out_w=out_w)
        assert out.shape == (xp.shape[0] * out_h * out_w, kh * kw * xp.shape[3])
        assert np.array_equal(out, expected)


def depthwise_loop(
    xp: np.ndarray, w: np.ndarray, fmt: BfpFormat, stride: int, out_h: int, out_w: int
) -> np.ndarray:
    """Per output and channel: ``bfp.quantize`` of the channel's kh*kw input window (its dot
    product, so its BFP block), then the float32 sum of the taps' products in (kh, kw) order."""
    kh, kw, c = w.shape
    out = np.zeros((xp.shape[0], out_h, out_w, c), np.float32)
    for b, y, x, ch in np.ndindex(out.shape):
        window = xp[b, y * stride : y * stride + kh, x * stride : x * stride + kw, ch].reshape(-1)
        q = quantize(window, fmt)
        acc = np.float32(0)
        for t in range(kh * kw):
            acc = np.float32(acc + q[t] * w[t // kw, t % kw, ch])
        out[b, y, x, ch] = acc
    return out


@settings(max_examples=60, deadline=None)
@given(patches(), formats(block_sizes=(1, 3, 4, 16, 128), exponent_bits=(2, 5, 8), mantissa_bits=(1, 15)))
def test_depthwise_conv_matches_a_loop(
    case: tuple[np.ndarray, int, int, int, int, int], fmt: BfpFormat
) -> None:
    xp, kh, kw, stride, out_h, out_w = case
    w = np.random.default_rng(xp.size).standard_normal((kh, kw, xp.shape[3])).astype(np.float32)
    expected = depthwise_loop(xp, w, fmt, stride, out_h, out_w)
    for kernels in (NUMPY, NUMBA):
        out = kernels.depthwise_conv(xp, w, fmt, stride=stride, out_h=out_h, out_w=out_w)
        assert out.dtype == np.float32
        assert_bits_equal(out, expected, kernels.__name__)


@pytest.mark.parametrize("rounding", ROUNDING_MODES)
def test_depthwise_conv_rounding_just_below_half_a_quantum(rounding: str) -> None:
    # Channel 0's 3x3 window holds 1.0 and 0.5 - 2**-25 quanta of msfp16-like precision: the latter
    # must round to 0, so with weights of 1 the output is exactly 1.0.
    fmt = BfpFormat("t", block_size=16, exponent_bits=8, mantissa_bits=7, rounding=rounding)  # type: ignore[arg-type]
    xp = np.zeros((1, 3, 3, 2), np.float32)
    xp[0, 0, 0, :] = 1.0
    xp[0, 1, 1, :] = (1 - 2.0**-24) * 2.0**-7
    w = np.ones((3, 3, 2), np.float32)
    for kernels in (NUMPY, NUMBA):
        out = kernels.depthwise_conv(xp, w, fmt, stride=1, out_h=1, out_w=1)
        assert out.tolist() == [[[[1.0, 1.0]]]]


@pytest.mark.parametrize("fmt", list(FORMATS.values()), ids=list(FORMATS))
def test_depthwise_conv_non_finite_and_extreme_windows(fmt: BfpFormat) -> None:
    rng = np.random.default_rng(5)
    xp = rng.standard_normal((1, 4, 4, 6)).astype(np.float32)
    xp[0, 0, 0, 0] = np.nan
    xp[0, 1, 1, 1] = np.inf
    xp[0, 2, 2, 2] = 3e38
    xp[0, :, :, 3] *= np.float32(2.0**-140)  # subnormal windows
    xp[0, :, :, 4] = 0.0
    w = rng.standard_normal((3, 3, 6)).astype(np.float32)
    with np.errstate(over="ignore"):  # 3e38 times a weight may overflow to inf, in every kernel alike
        expected = depthwise_loop(xp, w, fmt, 1, 2, 2)
        results = [k.depthwise_conv(xp, w, fmt, stride=1, out_h=2, out_w=2) for k in (NUMPY, NUMBA)]
    assert np.isnan(expected[0, 0, 0, 0])
    for kernels, out in zip((NUMPY, NUMBA), results, strict=True):
        assert_bits_equal(out, expected, kernels.__name__)


@pytest.mark.parametrize("k", [4, 5])
def test_depthwise_window_longer_than_a_block_is_several_blocks(k: int) -> None:
    # msfp16 blocks hold 16 taps: a 4x4 window is one block, a 5x5 window two (16 + 9). The 100.0 in
    # the first block sets e = 6 (quantum 1), which flushes its 0.01s; the second block has its own
    # e = -7 (quantum 2**-13), where 0.01 is 81.92 quanta and becomes 82 * 2**-13.
    fmt = FORMATS["msfp16"]
    xp = np.full((1, k, k, 3), 0.01, np.float32)
    xp[0, 0, 0, :] = 100.0
    w = np.ones((k, k, 3), np.float32)
    expected = depthwise_loop(xp, w, fmt, 1, 1, 1)
    assert expected[0, 0, 0, 0] == np.float32(100.0 + (k * k - 16) * 82 * 2.0**-13)
    for kernels in (NUMPY, NUMBA):
        assert_bits_equal(
            kernels.depthwise_conv(xp, w, fmt, stride=1, out_h=1, out_w=1), expected, kernels.__name__
        )


@pytest.mark.parametrize("activation", ["linear", "relu", "relu6"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_bias_activation(activation: str, with_bias: bool) -> None:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((5, 7)) * 8).astype(np.float32)
    x[0, :3] = [np.nan, np.inf, -np.inf]
    bias = rng.standard_normal(7).astype(np.float32) if with_bias else None
    expected = x + bias if bias is not None else x.copy()
    if activation != "linear":
        expected = np.maximum(expected, 0)
    if activation == "relu6":
        expected = np.minimum(expected, 6)
    assert (x < 0).any() and (x > 6).any()
    for kernels in (NUMPY, NUMBA):
        y = x.copy()
        assert kernels.bias_activation(y, bias, activation) is None  # in place
        assert_bits_equal(y, expected, kernels.__name__)
    assert np.isnan(expected[0, 0])


def test_bias_activation_on_a_4d_tensor() -> None:
    x = np.linspace(-10, 10, 2 * 3 * 3 * 4, dtype=np.float32).reshape(2, 3, 3, 4)
    bias = np.array([0.5, -0.5, 1.0, 0.0], np.float32)
    results = []
    for kernels in (NUMPY, NUMBA):
        y = x.copy()
        kernels.bias_activation(y, bias, "relu6")
        results.append(y)
    assert_bits_equal(results[0], np.clip(x + bias, 0, 6))
    assert_bits_equal(results[1], results[0])


@pytest.mark.parametrize("activation", ["linear", "relu6"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("c", [21, 32])  # 21: a partial block; 32: whole blocks
def test_depthwise_fused_padding_bias_activation_and_output_quantization(
    activation: str, stride: int, c: int
) -> None:
    # The fused form must equal the plain steps: zero-pad, depthwise, bias + activation, quantize.
    fmt = FORMATS["msfp16"]
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 7, 6, c)).astype(np.float32)
    w = rng.standard_normal((5, 5, c)).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    pads = (1, 2, 2, 1)
    xp = np.pad(x, ((0, 0), (1, 2), (2, 1), (0, 0)))
    out_h, out_w = (xp.shape[1] - 5) // stride + 1, (xp.shape[2] - 5) // stride + 1
    expected = NUMPY.depthwise_conv(xp, w, fmt, stride=stride, out_h=out_h, out_w=out_w)
    NUMPY.bias_activation(expected, bias, activation)
    expected = quantize(expected, fmt, axis=-1)
    for kernels in (NUMPY, NUMBA):
        out = kernels.depthwise_conv(
            x, w, fmt, stride=stride, out_h=out_h, out_w=out_w, pads=pads,
            bias=bias, activation=activation, quantize_output=True,
        )  # fmt: skip
        assert_bits_equal(out, expected, kernels.__name__)


@pytest.mark.parametrize("fmt", [f for f in FORMATS.values() if f.block_size == 16], ids=lambda f: f.name)
@pytest.mark.parametrize("c", [16, 32, 48, 256])
@pytest.mark.parametrize(("stride", "pads"), [(1, (0, 0, 0, 0)), (2, (0, 1, 0, 1)), (1, (1, 1, 1, 1))])
def test_whole_blocks_of_16_take_the_tree_kernel_and_match_the_reference(
    fmt: BfpFormat, c: int, stride: int, pads: tuple[int, int, int, int]
) -> None:
    # numba_bfp._window16: block maxima by a tree of pairwise maxima, for C a multiple of 16.
    rng = np.random.default_rng(c + stride)
    x = (rng.standard_normal((2, 5, 4, c)) * np.exp2(rng.integers(-20, 20, (2, 5, 4, c)))).astype(np.float32)
    x[0, 0, 0, :16] = 0.0  # an all-zero block
    x[0, 0, 1, 3] = np.nan
    x[0, 1, 0, 5] = -np.inf
    x[1, 0, 0, 16 % c : 16 % c + 16] *= np.float32(2.0**-135)  # a block of subnormals
    x[1, 1, 1, :] = np.maximum(x[1, 1, 1, :], 0)  # ReLU zeros beside values
    expected = reference_window(x, fmt, stride, pads)
    for kernels in (NUMPY, NUMBA):
        assert_bits_equal(
            kernels.quantize_window(x, fmt, stride=stride, pads=pads), expected, kernels.__name__
        )


@pytest.mark.parametrize("activation", ["linear", "relu", "relu6"])
def test_add_activation(activation: str) -> None:
    rng = np.random.default_rng(22)
    a = (rng.standard_normal((2, 3, 4, 5)) * 8).astype(np.float32)
    b = (rng.standard_normal((2, 3, 4, 5)) * 8).astype(np.float32)
    a[0, 0, 0, :2] = [np.nan, np.inf]
    expected = a + b
    NUMPY.bias_activation(expected, None, activation)
    for kernels in (NUMPY, NUMBA):
        out = kernels.add_activation(a, b, activation)
        assert out.shape == a.shape and out.dtype == np.float32
        assert_bits_equal(out, expected, kernels.__name__)


def test_add_activation_broadcasts_like_numpy() -> None:
    a = np.linspace(-3, 3, 2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    b = np.linspace(-1, 1, 5, dtype=np.float32)
    for kernels in (NUMPY, NUMBA):
        assert_bits_equal(kernels.add_activation(a, b, "relu"), np.maximum(a + b, 0), kernels.__name__)
