"""The executor (``fpgaserve.npu.executor``) on hand-built programs, against a float64 numpy reference.

The reference applies the same BFP rules with ``bfp.quantize`` (weights once, the input of every
matrix-unit op along channels) and then computes in float64 with plain loops over kernel taps; the
executor accumulates in float32, hence the tolerances.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fpgaserve.npu.bfp import FORMATS, BfpFormat, quantize
from fpgaserve.npu.device import DEVICE_MODELS, DeviceMemoryError, DeviceModel, EmulatedDevice
from fpgaserve.npu.executor import Executor, InputShapeError
from fpgaserve.npu.kernels import Kernels, load_kernels
from fpgaserve.npu.program import Op, Program
from tests.npu.helpers import assert_bits_equal, make_program

NUMPY = load_kernels("numpy")
NUMBA = load_kernels("numba")
KERNELS = pytest.mark.parametrize("kernels", [NUMPY, NUMBA], ids=["numpy", "numba"])
FMT = FORMATS["msfp12"]  # 3 mantissa bits: quantization is far above float32 rounding
BIG = DeviceModel(
    "big", weight_memory_bytes=1 << 30, matrix_units=2, native_dim=4, vector_lanes=8, clock_mhz=100.0
)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def weights(seed: int, *shape: int) -> np.ndarray:
    return (rng(seed).standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))).astype(np.float32)


# -- float64 reference -----------------------------------------------------------------------------


def act(y: np.ndarray, activation: str) -> np.ndarray:
    if activation == "relu":
        return np.maximum(y, 0)
    if activation == "relu6":
        return np.clip(y, 0, 6)
    return y


def pad(x: np.ndarray, pads: tuple[int, int, int, int], value: float = 0.0) -> np.ndarray:
    t, b, left, r = pads
    return np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)), constant_values=value)


def taps(xp: np.ndarray, kh: int, kw: int, stride: int, out_h: int, out_w: int):  # type: ignore[no-untyped-def]
    for i in range(kh):
        for j in range(kw):
            yield i, j, xp[:, i : i + stride * out_h : stride, j : j + stride * out_w : stride, :]


def bfp(x: np.ndarray, fmt: BfpFormat | None, axis: int) -> np.ndarray:
    """``bfp.quantize`` in float64; ``fmt=None`` is the unquantized float computation."""
    return (x if fmt is None else quantize(x, fmt, axis=axis)).astype(np.float64)


def ref_conv(x, w, bias, *, stride=1, pads=(0, 0, 0, 0), activation="linear", fmt=FMT):  # type: ignore[no-untyped-def]
    kh, kw, _, cout = w.shape
    wq = bfp(w, fmt, 2)  # blocks over input channels
    xp = pad(bfp(x, fmt, -1), pads)
    out_h, out_w = (xp.shape[1] - kh) // stride + 1, (xp.shape[2] - kw) // stride + 1
    y = np.zeros((x.shape[0], out_h, out_w, cout))
    for i, j, tap in taps(xp, kh, kw, stride, out_h, out_w):
        y += tap @ wq[i, j]
    return act(y + (0 if bias is None else bias), activation)


def ref_depthwise(x, w, bias, *, stride=1, pads=(0, 0, 0, 0), activation="linear", fmt=FMT):  # type: ignore[no-untyped-def]
    # A channel's dot product runs over its kh*kw taps: weights and input windows are blocked there.
    kh, kw, c = w.shape
    wq = bfp(w.reshape(kh * kw, c), fmt, 0).reshape(kh, kw, c)
    xp = pad(x, pads)
    out_h, out_w = (xp.shape[1] - kh) // stride + 1, (xp.shape[2] - kw) // stride + 1
    y = np.zeros((x.shape[0], out_h, out_w, c))
    for b, oy, ox in np.ndindex(x.shape[0], out_h, out_w):
        window = xp[b, oy * stride : oy * stride + kh, ox * stride : ox * stride + kw, :].reshape(kh * kw, c)
        y[b, oy, ox] = (bfp(window, fmt, 0) * wq.reshape(kh * kw, c)).sum(axis=0)
    return act(y + (0 if bias is None else bias), activation)


def ref_dense(x, w, bias, *, activation="linear", fmt=FMT):  # type: ignore[no-untyped-def]
    y = bfp(x, fmt, -1) @ bfp(w, fmt, 0)
    return act(y + (0 if bias is None else bias), activation)


def ref_pool(x, size, stride, kind, pads=(0, 0, 0, 0)):  # type: ignore[no-untyped-def]
    xp = pad(x, pads, -np.inf if kind == "max" else 0.0)
    out_h, out_w = (xp.shape[1] - size) // stride + 1, (xp.shape[2] - size) // stride + 1
    stack = np.stack([tap for _, _, tap in taps(xp, size, size, stride, out_h, out_w)])
    return stack.max(axis=0) if kind == "max" else stack.mean(axis=0)


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * scale)


# -- programs ------------------------------------------------------------------------------------


def conv_program(
    *,
    h: int = 6,
    cin: int = 5,
    cout: int = 4,
    k: int = 3,
    stride: int = 1,
    pads=(1, 1, 1, 1),
    fmt: BfpFormat = FMT,
) -> tuple[Program, np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    out = (h + pads[0] + pads[1] - k) // stride + 1
    w, b = weights(1, k, k, cin, cout), rng(2).standard_normal(cout).astype(np.float32)
    attrs = {
        "strides": [stride, stride],
        "pads": list(pads),
        "activation": "relu",
        "out_shape": [out, out, cout],
    }
    program = make_program(
        fmt=fmt,
        input_shape=(h, h, cin),
        output_shape=(out, out, cout),
        ops=[Op("conv2d", "conv", ("x",), "y", attrs)],
        weights={"conv": ("conv2d", w)},
        biases={"conv": b},
    )
    return program, w, b


def residual_program() -> Program:
    """conv 1x1 + conv 3x3 -> add -> max pool -> global average pool -> dense."""
    s = [8, 8, 8]
    ops = [
        Op("conv2d", "a", ("x",), "a", {"out_shape": s}),
        Op("conv2d", "b", ("x",), "b", {"pads": [1, 1, 1, 1], "activation": "relu", "out_shape": s}),
        Op("add", "add", ("a", "b"), "s", {"activation": "relu", "out_shape": s}),
        Op("max_pool", "pool", ("s",), "p", {"pool": [2, 2], "strides": [2, 2], "out_shape": [4, 4, 8]}),
        Op("global_avg_pool", "gap", ("p",), "g", {"in_shape": [4, 4, 8], "out_shape": [8]}),
        Op("dense", "fc", ("g",), "y", {"out_shape": [3]}),
    ]
    return make_program(
        fmt=FMT,
        input_shape=(8, 8, 6),
        output_shape=(3,),
        ops=ops,
        weights={
            "a": ("conv2d", weights(3, 1, 1, 6, 8)),
            "b": ("conv2d", weights(4, 3, 3, 6, 8)),
            "fc": ("dense", weights(5, 8, 3)),
        },
        biases={
            "a": np.full(8, 0.1, np.float32),
            "b": np.full(8, -0.1, np.float32),
            "fc": np.zeros(3, np.float32),
        },
        name="residual",
    )


def residual_reference(x: np.ndarray) -> np.ndarray:
    w = {
        name: weights(seed, *shape)
        for name, seed, shape in (("a", 3, (1, 1, 6, 8)), ("b", 4, (3, 3, 6, 8)), ("fc", 5, (8, 3)))
    }
    f32 = np.float32  # the executor hands float32 tensors from op to op
    a = ref_conv(x, w["a"], 0.1).astype(f32)
    b = ref_conv(x, w["b"], -0.1, pads=(1, 1, 1, 1), activation="relu").astype(f32)
    s = act(a.astype(np.float64) + b, "relu").astype(f32)
    p = ref_pool(s, 2, 2, "max").astype(f32)
    g = p.astype(np.float64).mean(axis=(1, 2)).astype(f32)
    return ref_dense(g, w["fc"], 0.0)


def mobile_program() -> Program:
    """pad -> depthwise 3x3 stride 2 -> scale/shift -> relu -> avg pool -> reshape -> dense."""
    ops = [
        Op("pad", "pad", ("x",), "xp", {"pads": [1, 1, 1, 1], "out_shape": [9, 9, 4]}),
        Op(
            "depthwise_conv2d",
            "dw",
            ("xp",),
            "d",
            {"kernel": [3, 3], "strides": [2, 2], "activation": "relu6", "out_shape": [4, 4, 4]},
        ),
        Op("scale_shift", "bn", ("d",), "s", {"out_shape": [4, 4, 4]}),
        Op("activation", "act", ("s",), "r", {"activation": "relu", "out_shape": [4, 4, 4]}),
        Op("avg_pool", "avg", ("r",), "v", {"pool": [2, 2], "strides": [1, 1], "out_shape": [3, 3, 4]}),
        Op("reshape", "flat", ("v",), "f", {"out_shape": [36]}),
        Op("dense", "fc", ("f",), "y", {"out_shape": [5]}),
    ]
    return make_program(
        fmt=FMT,
        input_shape=(7, 7, 4),
        output_shape=(5,),
        ops=ops,
        weights={"dw": ("depthwise_conv2d", weights(6, 3, 3, 4)), "fc": ("dense", weights(7, 36, 5))},
        biases={"dw": np.array([0.0, 0.5, -0.5, 1.0], np.float32)},
        constants={
            "bn.scale": np.array([1.0, -2.0, 0.5, 3.0], np.float32),
            "bn.shift": np.full(4, -0.25, np.float32),
        },
        name="mobile",
    )


def mobile_reference(x: np.ndarray) -> np.ndarray:
    f32 = np.float32
    xp = pad(x, (1, 1, 1, 1))
    d = ref_depthwise(xp, weights(6, 3, 3, 4), np.array([0.0, 0.5, -0.5, 1.0]), stride=2, activation="relu6")
    s = (d.astype(f32).astype(np.float64) * [1.0, -2.0, 0.5, 3.0] - 0.25).astype(f32)
    v = ref_pool(act(s.astype(np.float64), "relu"), 2, 1, "avg").astype(f32)
    return ref_dense(v.reshape(v.shape[0], -1), weights(7, 36, 5), None)


def batch(seed: int, n: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng(seed).standard_normal((n, *shape)).astype(np.float32)


# -- numerics ------------------------------------------------------------------------------------


@KERNELS
@pytest.mark.parametrize(
    ("h", "cin", "k", "stride", "pads"),
    [
        (6, 5, 3, 1, (1, 1, 1, 1)),  # SAME 3x3
        (6, 5, 3, 2, (0, 1, 0, 1)),  # SAME 3x3 stride 2 (TensorFlow pads bottom/right)
        (5, 19, 1, 2, (0, 0, 0, 0)),  # pointwise stride 2: quantized while subsampling
        (7, 33, 2, 1, (0, 0, 0, 0)),  # VALID 2x2, channels spanning 3 blocks
    ],
)
def test_conv2d_matches_reference(
    kernels: Kernels, h: int, cin: int, k: int, stride: int, pads: tuple[int, int, int, int]
) -> None:
    program, w, b = conv_program(h=h, cin=cin, k=k, stride=stride, pads=pads)
    x = batch(10, 2, (h, h, cin))
    with Executor(program, device=EmulatedDevice(model=BIG), kernels=kernels) as ex:
        out = ex.run(x).outputs
    expected = ref_conv(x, w, b, stride=stride, pads=pads, activation="relu")
    assert_close(out, expected)
    # Not a float convolution: without the BFP rounding the answer is measurably different.
    unquantized = ref_conv(x, w, b, stride=stride, pads=pads, activation="relu", fmt=None)
    assert not np.allclose(out, unquantized, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


@KERNELS
def test_dense_matches_reference(kernels: Kernels) -> None:
    w = weights(8, 37, 6)
    program = make_program(
        fmt=FMT,
        input_shape=(37,),
        output_shape=(6,),
        ops=[Op("dense", "fc", ("x",), "y", {"activation": "relu6", "out_shape": [6]})],
        weights={"fc": ("dense", w)},
        biases={"fc": np.full(6, 0.5, np.float32)},
    )
    x = batch(11, 3, (37,)) * 4
    with Executor(program, device=EmulatedDevice(model=BIG), kernels=kernels) as ex:
        out = ex.run(x).outputs
    assert_close(out, ref_dense(x, w, 0.5, activation="relu6"))


@KERNELS
def test_residual_program_matches_reference(kernels: Kernels) -> None:
    program = residual_program()
    x = batch(12, 2, (8, 8, 6))
    with Executor(program, device=EmulatedDevice(model=BIG), kernels=kernels) as ex:
        out = ex.run(x).outputs
    assert out.shape == (2, 3)
    assert_close(out, residual_reference(x))


@KERNELS
def test_depthwise_program_matches_reference(kernels: Kernels) -> None:
    x = batch(13, 2, (7, 7, 4))
    with Executor(mobile_program(), device=EmulatedDevice(model=BIG), kernels=kernels) as ex:
        out = ex.run(x).outputs
    assert out.shape == (2, 5)
    assert_close(out, mobile_reference(x))


@pytest.mark.parametrize("make", [residual_program, mobile_program])
def test_numba_and_numpy_kernels_give_identical_outputs(make) -> None:  # type: ignore[no-untyped-def]
    program = make()
    x = batch(14, 3, program.input_shape)
    results = []
    for kernels in (NUMPY, NUMBA):
        with Executor(program, device=EmulatedDevice(model=BIG), kernels=kernels) as ex:
            results.append(ex.run(x).outputs)
    assert_bits_equal(results[1], results[0])


def test_examples_in_a_batch_are_independent() -> None:
    program = residual_program()
    x = batch(15, 4, (8, 8, 6))
    with Executor(program, device=EmulatedDevice(model=BIG)) as ex:
        together = ex.run(x).outputs
        alone = np.concatenate([ex.run(x[i : i + 1]).outputs for i in range(4)])
    assert_bits_equal(together, alone)


# -- threads ---------------------------------------------------------------------------------------


@KERNELS
def test_concurrent_runs_give_the_same_results(kernels: Kernels) -> None:
    program = residual_program()
    inputs = [batch(20 + i, 1 + i % 3, (8, 8, 6)) for i in range(6)]
    with Executor(program, device=EmulatedDevice(model=BIG), kernels=kernels) as ex:
        expected = [ex.run(x).outputs for x in inputs]
        start = threading.Barrier(4)

        def worker(offset: int) -> list[np.ndarray]:
            start.wait()
            return [ex.run(inputs[(offset + i) % 6]).outputs for i in range(12)]

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(worker, range(4)))
    for offset, outs in enumerate(results):
        for i, out in enumerate(outs):
            assert_bits_equal(out, expected[(offset + i) % 6])


@KERNELS
@pytest.mark.parametrize("make", [residual_program, mobile_program])
@pytest.mark.parametrize(("n", "parts"), [(2, "2"), (3, "2"), (8, "auto"), (7, "3"), (5, "8")])
def test_a_split_batch_gives_the_unsplit_outputs(
    make: Callable[[], Program], kernels: Kernels, n: int, parts: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = make()
    x = batch(30 + n, n, program.input_shape)
    with Executor(program, device=EmulatedDevice(model=BIG), kernels=kernels) as ex:
        monkeypatch.setenv("FPGASERVE_DATA_PARALLEL", "0")
        whole = ex.run(x).outputs
        monkeypatch.setenv("FPGASERVE_DATA_PARALLEL", parts)
        split = ex.run(x).outputs
    assert split.flags.c_contiguous
    assert split.view(np.uint32).tobytes() == whole.view(np.uint32).tobytes()  # -0.0 included


def test_batches_of_one_and_the_opt_out_run_unsplit(monkeypatch: pytest.MonkeyPatch) -> None:
    program = residual_program()
    with Executor(program, device=EmulatedDevice(model=BIG)) as ex:
        monkeypatch.setattr(ex, "_run_split", lambda *a: pytest.fail("split"))
        ex.run(batch(40, 1, program.input_shape))
        monkeypatch.setenv("FPGASERVE_DATA_PARALLEL", "off")
        ex.run(batch(41, 4, program.input_shape))


def test_a_bad_data_parallel_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FPGASERVE_DATA_PARALLEL", "lots")
    program = residual_program()
    with Executor(program, device=EmulatedDevice(model=BIG)) as ex, pytest.raises(ValueError, match="lots"):
        ex.run(batch(43, 2, program.input_shape))


def test_a_split_run_restores_the_thread_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    import numba

    from fpgaserve.npu import threads

    monkeypatch.setenv("FPGASERVE_DATA_PARALLEL", "2")
    blas = threads._openblas()
    before = (numba.get_num_threads(), blas[0]() if blas else None)
    with Executor(residual_program(), device=EmulatedDevice(model=BIG), kernels=NUMBA) as ex:
        ex.run(batch(42, 4, (8, 8, 6)))
    assert (numba.get_num_threads(), blas[0]() if blas else None) == before


# -- timing ----------------------------------------------------------------------------------------


def test_modeled_device_time_follows_the_cycle_model() -> None:
    program, _, _ = conv_program()  # 3x3 conv, 6x6x5 -> 6x6x4
    device = EmulatedDevice(model=BIG)  # 2 matrix units of native size 4, 100 MHz
    with Executor(program, device=device) as ex:
        result = ex.run(batch(16, 2, (6, 6, 5)))
        # rows 2*36 = 72; K = 45 -> 12 tiles, N = 4 -> 1 tile: 72 * 12 / 2 = 432 cycles + 64 fill.
        cycles = 432 + 64
        # Host link: 2 * (180 input + 144 output values) * 2 bytes (fp16) at 64 Gbit/s.
        transfer = 2 * (180 + 144) * 2 * 8 / 64e9
        assert result.device_seconds == pytest.approx(cycles / 100e6 + transfer, rel=1e-12)
        assert result.device_seconds == ex.modeled_seconds(2)
        assert result.wall_seconds > 0


def test_wider_formats_model_more_matrix_passes() -> None:
    narrow, _, _ = conv_program(fmt=FORMATS["msfp16"])  # sign + 7 bits: one pass of 8-bit lanes
    wide, _, _ = conv_program(fmt=FORMATS["int12-bfp"])  # sign + 11 bits: 2 x 2 limb products
    transfer = 2 * (180 + 144) * 2 * 8 / 64e9
    with (
        Executor(narrow, device=EmulatedDevice(model=BIG)) as a,
        Executor(wide, device=EmulatedDevice(model=BIG)) as b,
    ):
        assert a.modeled_seconds(2) == pytest.approx((432 + 64) / 100e6 + transfer, rel=1e-12)
        assert b.modeled_seconds(2) == pytest.approx((4 * 432 + 64) / 100e6 + transfer, rel=1e-12)


def test_modeled_time_is_positive_and_grows_with_batch() -> None:
    with Executor(residual_program(), device=EmulatedDevice(model=DEVICE_MODELS["pbs-a10"])) as ex:
        times = [ex.modeled_seconds(n) for n in (1, 2, 4, 8, 32)]
        assert times[0] > 0
        assert all(a < b for a, b in itertools.pairwise(times))
        assert ex.run(batch(17, 4, (8, 8, 6))).device_seconds == times[2]


def test_a_faster_device_models_less_time() -> None:
    program = residual_program()
    with (
        Executor(program, device=EmulatedDevice(model=DEVICE_MODELS["pbs-s10"])) as fast,
        Executor(program, device=EmulatedDevice(model=DEVICE_MODELS["pbs-tiny"])) as slow,
    ):
        assert fast.modeled_seconds(8) < slow.modeled_seconds(8)


# -- input checks and memory -----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(6, 6, 5), (1, 6, 6, 4), (1, 5, 6, 5), (1, 6, 6, 5, 1)])
def test_wrong_input_shape_is_refused(shape: tuple[int, ...]) -> None:
    program, _, _ = conv_program()
    with (
        Executor(program, device=EmulatedDevice(model=BIG)) as ex,
        pytest.raises(InputShapeError, match=r"expects input of shape \(N, 6, 6, 5\)"),
    ):
        ex.run(np.zeros(shape, np.float32))


def test_executor_reserves_and_releases_weight_memory() -> None:
    program = residual_program()
    size = program.weight_bytes
    model = DeviceModel(
        "fit",
        weight_memory_bytes=size + size // 2,
        matrix_units=1,
        native_dim=8,
        vector_lanes=8,
        clock_mhz=1.0,
    )
    device = EmulatedDevice(model=model)
    first = Executor(program, device=device)
    assert device.used_bytes == size
    with pytest.raises(DeviceMemoryError, match="residual"):
        Executor(program, device=device)  # a second copy does not fit
    assert device.used_bytes == size  # the refusal reserved nothing
    first.close()
    assert device.used_bytes == 0
    with Executor(program, device=device) as again:
        assert device.used_bytes == size
        assert again.run(batch(18, 1, (8, 8, 6))).outputs.shape == (1, 3)
    assert device.used_bytes == 0


def test_several_programs_share_a_device() -> None:
    device = EmulatedDevice(model=BIG)
    a, b = residual_program(), mobile_program()
    with Executor(a, device=device), Executor(b, device=device):
        assert device.used_bytes == a.weight_bytes + b.weight_bytes
        assert len(device.resident_programs()) == 2
    assert device.used_bytes == 0


def test_program_larger_than_the_device_is_refused() -> None:
    w = np.ones((1024, 1024), np.float32)
    program = make_program(
        fmt=FORMATS["msfp16"],
        input_shape=(1024,),
        output_shape=(1024,),
        ops=[Op("dense", "fc", ("x",), "y", {"out_shape": [1024]})],
        weights={"fc": ("dense", w)},
        name="wide",
    )
    # 2**20 values * 8 bits + 2**16 blocks * 8 bits = 1.0625 MiB > pbs-tiny's 1 MiB.
    assert program.weight_bytes == (1 << 20) + (1 << 16)
    device = EmulatedDevice(model=DEVICE_MODELS["pbs-tiny"])
    with pytest.raises(DeviceMemoryError, match=r"needs 1\.1 MiB .* 1\.0 MiB free"):
        Executor(program, device=device)
    assert device.used_bytes == 0
    # The same program fits a bigger board.
    with Executor(program, device=EmulatedDevice(model=DEVICE_MODELS["pbs-a10"])) as ex:
        assert ex.device.used_bytes == program.weight_bytes
