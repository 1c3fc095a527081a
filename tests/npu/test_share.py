"""An op's work shared with helper threads: the numba kernels' row tiles give the bits of one call."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

from fpgaserve.npu import EmulatedDevice, Executor, share
from fpgaserve.npu.kernels import load_kernels
from fpgaserve.npu.share import MAX_ROW_TILES, MIN_TILE_WORK, row_bounds, run_rows, run_shared, spread_tiles
from tests.npu.helpers import assert_bits_equal
from tests.npu.test_executor import BIG, batch, mobile_program, residual_program


@pytest.mark.parametrize(("rows", "work"), [(1, 10**9), (7, 1), (112, 112 * 16), (10_000, 4096), (3, 10**6)])
def test_row_tiles_cover_the_rows_once_from_the_shape_alone(rows: int, work: int) -> None:
    bounds = row_bounds(rows, work)
    assert bounds[0] == 0 and bounds[-1] == rows
    assert all(lo < hi for lo, hi in itertools.pairwise(bounds))
    assert len(bounds) - 1 <= MAX_ROW_TILES
    if len(bounds) > 2:  # a tile is worth handing over
        assert min(hi - lo for lo, hi in itertools.pairwise(bounds)) * work >= MIN_TILE_WORK // 2


def test_rows_run_once_each_spread_or_not() -> None:
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def kernel(lo: int, hi: int) -> None:
        with lock:
            seen.append((lo, hi))

    run_rows(kernel, 1000, MIN_TILE_WORK)
    assert seen == [(0, 1000)]  # not spreading: one call
    seen.clear()
    with spread_tiles():
        run_rows(kernel, 1000, MIN_TILE_WORK)
    assert sorted(seen) == list(itertools.pairwise(row_bounds(1000, MIN_TILE_WORK)))
    assert len(seen) == MAX_ROW_TILES


def test_a_failing_job_fails_the_caller() -> None:
    def bad() -> None:
        raise RuntimeError("tile failed")

    with spread_tiles(), pytest.raises(RuntimeError, match="tile failed"):
        run_shared([lambda: None, bad, lambda: None])


@pytest.mark.parametrize("make", [residual_program, mobile_program], ids=["residual", "mobile"])
def test_every_kernel_in_many_row_tiles_gives_the_bits_of_one_call(
    monkeypatch: pytest.MonkeyPatch, make
) -> None:  # type: ignore[no-untyped-def]
    program = make()
    x = batch(11, 2, program.input_shape)
    kernels = load_kernels("numba")
    with Executor(program, device=EmulatedDevice(model=BIG), kernels=kernels, spread=False) as single:
        expected = single.run(x).outputs
    monkeypatch.setattr(share, "MIN_TILE_WORK", 1)  # every kernel in as many tiles as it may have
    monkeypatch.setattr(share, "available_cores", lambda: 4)
    monkeypatch.setenv("FPGASERVE_DATA_PARALLEL", "off")
    with Executor(program, device=EmulatedDevice(model=BIG), kernels=kernels, spread=True) as spread:
        got = spread.run(x).outputs
    assert_bits_equal(got, expected, "row tiles spread vs one call")
    assert np.isfinite(got).all()
