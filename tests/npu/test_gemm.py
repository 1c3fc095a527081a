"""Deterministic GEMMs (``fpgaserve.npu.gemm``): an example's result does not depend on the threads
that ran it or on the batch it came in.

OpenBLAS's float32 GEMM sums in an order that follows its thread count and the rows of the call, so
these tests use shapes where that shows (hundreds of rows, reductions of hundreds): before fixed
tiles, the programs below gave an image different last bits alone and in a batch.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fpgaserve.npu import share
from fpgaserve.npu.bfp import FORMATS
from fpgaserve.npu.device import DeviceModel, EmulatedDevice
from fpgaserve.npu.executor import Executor
from fpgaserve.npu.gemm import MAX_ROW_TILES, MIN_COL_TILE, MIN_ROW_TILE, TiledGemm, tile_grid
from fpgaserve.npu.kernels import load_kernels
from fpgaserve.npu.program import Op, Program
from fpgaserve.npu.share import spread_tiles
from fpgaserve.npu.threads import _openblas
from tests.npu.helpers import assert_bits_equal, make_program

BIG = DeviceModel(
    "big", weight_memory_bytes=1 << 30, matrix_units=2, native_dim=4, vector_lanes=8, clock_mhz=100.0
)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize(
    ("rows", "outputs"), [(1, 10), (49, 64), (49, 512), (196, 1000), (784, 128), (12544, 64)]
)
def test_the_grid_covers_an_example_in_tiles_that_follow_its_shape(rows: int, outputs: int) -> None:
    row_bounds, col_bounds = tile_grid(rows=rows, outputs=outputs)
    assert (row_bounds[0], row_bounds[-1], col_bounds[0], col_bounds[-1]) == (0, rows, 0, outputs)
    assert all(b > a for a, b in itertools.pairwise(row_bounds))
    assert all(b > a for a, b in itertools.pairwise(col_bounds))
    assert len(row_bounds) - 1 <= MAX_ROW_TILES
    assert len(row_bounds) == 2 or min(b - a for a, b in itertools.pairwise(row_bounds)) >= MIN_ROW_TILE
    assert len(col_bounds) == 2 or min(b - a for a, b in itertools.pairwise(col_bounds)) >= MIN_COL_TILE
    # An example with few rows but many outputs is still cut in two, so a batch of one can spread.
    if rows < 2 * MIN_ROW_TILE and outputs >= 2 * MIN_COL_TILE:
        assert len(col_bounds) == 3


@pytest.mark.parametrize(("rows", "k", "n"), [(49, 576, 512), (784, 288, 128), (1, 320, 40)])
def test_a_tiled_product_is_the_same_for_an_example_alone_in_a_batch_and_spread(
    rows: int, k: int, n: int
) -> None:
    weights = (rng(1).standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    product = TiledGemm.build(weights=weights, rows=rows)
    cols = rng(2).standard_normal((5 * rows, k)).astype(np.float32)
    batched = product(cols)
    with spread_tiles():
        spread = product(cols)
    alone = np.concatenate([product(np.ascontiguousarray(cols[i * rows : (i + 1) * rows])) for i in range(5)])
    assert_bits_equal(spread, batched, "spread vs one thread")
    assert_bits_equal(alone, batched, "alone vs in a batch")
    np.testing.assert_allclose(batched, cols.astype(np.float64) @ weights, rtol=1e-4, atol=1e-4)


def test_a_product_runs_on_one_openblas_thread_and_restores_the_count() -> None:
    blas = _openblas()
    if blas is None:
        pytest.skip("numpy does not use OpenBLAS here")
    get, put = blas
    weights = rng(3).standard_normal((576, 128)).astype(np.float32)
    product = TiledGemm.build(weights=weights, rows=784)
    cols = rng(4).standard_normal((784, 576)).astype(np.float32)
    expected = product(cols)
    before = get()
    put(2)
    try:
        assert_bits_equal(product(cols), expected, "with OpenBLAS set to 2 threads")
        assert get() == 2
    finally:
        put(before)


def test_an_error_in_a_tile_reaches_the_caller() -> None:
    product = TiledGemm.build(weights=np.ones((8, 4), np.float32), rows=1)
    with pytest.raises(ValueError, match="multiple of 3"):
        TiledGemm.build(weights=np.ones((8, 4), np.float32), rows=3)(np.ones((4, 8), np.float32))
    with spread_tiles(), pytest.raises(ValueError):
        product(np.ones((4, 7), np.float32))  # wrong reduction: matmul fails in a tile


def wide_program() -> Program:
    """3x3 conv 28x28x64 -> 128 (784 rows, two row tiles), 1x1 stride-2 conv -> 14x14x512 (196 rows,
    two column tiles), global average pool, dense 512 -> 10 (one row per example)."""
    fmt = FORMATS["int12-bfp"]
    ops = [
        Op(
            "conv2d",
            "a",
            ("x",),
            "a",
            {"pads": [1, 1, 1, 1], "activation": "relu", "out_shape": [28, 28, 128]},
        ),
        Op("conv2d", "b", ("a",), "b", {"strides": [2, 2], "activation": "relu", "out_shape": [14, 14, 512]}),
        Op("global_avg_pool", "gap", ("b",), "g", {"in_shape": [14, 14, 512], "out_shape": [512]}),
        Op("dense", "fc", ("g",), "y", {"out_shape": [10]}),
    ]

    def w(seed: int, *shape: int) -> np.ndarray:
        return (rng(seed).standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))).astype(np.float32)

    return make_program(
        fmt=fmt,
        input_shape=(28, 28, 64),
        output_shape=(10,),
        ops=ops,
        weights={
            "a": ("conv2d", w(5, 3, 3, 64, 128)),
            "b": ("conv2d", w(6, 1, 1, 128, 512)),
            "fc": ("dense", w(7, 512, 10)),
        },
        biases={
            "a": np.full(128, 0.01, np.float32),
            "b": np.zeros(512, np.float32),
            "fc": np.zeros(10, np.float32),
        },
    )


def test_an_image_gives_the_same_bits_whatever_the_threads_and_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    program = wide_program()
    x = rng(8).standard_normal((5, 28, 28, 64)).astype(np.float32)
    kernels = load_kernels("numba")
    with (
        Executor(program, device=EmulatedDevice(model=BIG), kernels=kernels, spread=True) as spread,
        Executor(program, device=EmulatedDevice(model=BIG), kernels=kernels, spread=False) as single,
    ):
        alone = spread.run(x[:1]).outputs
        results = {"one core": single.run(x[:1]).outputs}
        monkeypatch.setattr(share, "available_cores", lambda: 4)  # more helpers than the pool has
        results["spread over 4 helpers"] = spread.run(x[:1]).outputs
        monkeypatch.setenv("FPGASERVE_DATA_PARALLEL", "off")
        results["first of 3, unsplit, spread"] = spread.run(x[:3]).outputs[:1]
        results["first of 3, unsplit, one core"] = single.run(x[:3]).outputs[:1]
        monkeypatch.setenv("FPGASERVE_DATA_PARALLEL", "2")
        results["first of 5 in 2 parts"] = spread.run(x).outputs[:1]
        results["first of 5 moved second"] = spread.run(x[[2, 0, 1, 3, 4]]).outputs[1:2]
    for what, out in results.items():
        assert_bits_equal(out, alone, what)
