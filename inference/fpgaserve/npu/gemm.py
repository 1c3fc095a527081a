"""Deterministic GEMMs: each example's rows in fixed tiles, one single-threaded OpenBLAS call per tile.

Role: the matrix-unit ops of ``lowering`` (conv2d, dense) multiply their quantized activations with
their weights through a ``TiledGemm`` built once per op; ``Executor.run`` decides, with
``share.spread_tiles``, whether the tiles of a run are shared with the helper threads (``share.py``,
which the numba kernels' row tiles use too) or run one after the other on the calling thread.

Why tiles: OpenBLAS's float32 GEMM sums in an order that follows its thread count and the number of
rows in the call (measured on every GEMM shape of ResNet-50: splitting a product's rows in two, or
running it on two threads instead of one, changes the last bits of 2-30 % of its elements), so an
image's features depended on the threading and on the batch it came in. A call of a given shape on
one thread gives the same bits wherever its operands lie in memory (measured, and tested), so each
op here cuts every example's rows (and, where an example has few rows, the weight columns) into a
grid that depends on the op's shape only, never on the batch or the cores, and runs each tile as its
own single-threaded call. The grid also gives a batch of one its parallelism without OpenBLAS's
threads, which spun against numba's after every call. A batch's examples are not stacked into one
call (which would pack the weights once, not once per example): a row's sum depends on its offset in
OpenBLAS's 12-row groups, so stacking needs a copy into a layout that keeps every row's offset class,
and that measured no faster (``bench/gemm_rows.py``, docs/benchmarks.md).

Sharing tiles (``share.run_shared``): the calling thread and the helpers take tiles from one counter,
and the caller waits only for tiles a helper has started, so a busy core slows a run down to one
core's speed, never below it (a barrier over OpenBLAS's threads waits for the slowest).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fpgaserve.npu.share import run_shared
from fpgaserve.npu.threads import blas_single_threaded

__all__ = ["TiledGemm", "tile_grid"]

F32 = npt.NDArray[np.float32]

# Row tiles of at least this many rows: below it, OpenBLAS's packing of the weights (once per call)
# costs more than the tile's arithmetic gains from a second core (measured on ResNet-50's shapes:
# 784 rows in two tiles cost as one, 196 rows in two 12 % more, 49 rows in two 22 % more).
MIN_ROW_TILE = 392
MAX_ROW_TILES = 8  # enough tiles to share over a few cores, few enough to keep the calls large
# Where an example has too few rows to split, its weight columns are split in two if each half keeps
# this many: each call then packs half the weights (49 x 4608 x 512 in two column tiles: +2 %).
MIN_COL_TILE = 128


def tile_grid(*, rows: int, outputs: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The row and column boundaries of one example's tiles, from the op's shape alone."""
    row_tiles = max(1, min(MAX_ROW_TILES, rows // MIN_ROW_TILE))
    col_tiles = 2 if row_tiles == 1 and outputs >= 2 * MIN_COL_TILE else 1
    row_bounds = tuple(rows * i // row_tiles for i in range(row_tiles + 1))
    # Column tiles at multiples of 16 keep OpenBLAS's output panels whole.
    col_bounds = tuple(
        [0, *(((outputs * i // col_tiles) + 15) // 16 * 16 for i in range(1, col_tiles)), outputs]
    )
    return row_bounds, col_bounds


@dataclass(frozen=True)
class TiledGemm:
    """``cols @ weights`` for an op whose every example contributes ``rows`` rows of ``cols``."""

    rows: int
    row_bounds: tuple[int, ...]
    col_bounds: tuple[int, ...]
    weight_tiles: tuple[F32, ...]  # contiguous column slices of the weight matrix, one per col tile

    @classmethod
    def build(cls, *, weights: F32, rows: int) -> TiledGemm:
        row_bounds, col_bounds = tile_grid(rows=rows, outputs=weights.shape[1])
        tiles = tuple(np.ascontiguousarray(weights[:, lo:hi]) for lo, hi in itertools.pairwise(col_bounds))
        return cls(rows=rows, row_bounds=row_bounds, col_bounds=col_bounds, weight_tiles=tiles)

    def __call__(self, cols: F32) -> F32:
        total = cols.shape[0]
        if total % self.rows:
            raise ValueError(f"GEMM operand has {total} rows, not a multiple of {self.rows} per example")
        out = np.empty((total, self.col_bounds[-1]), np.float32)
        jobs = [
            self._job(cols=cols, out=out, rows=(base + r0, base + r1), tile=tile)
            for base in range(0, total, self.rows)
            for r0, r1 in itertools.pairwise(self.row_bounds)
            for tile in range(len(self.weight_tiles))
        ]
        with blas_single_threaded():  # every tile on one OpenBLAS thread, whoever calls
            run_shared(jobs)
        return out

    def _job(self, *, cols: F32, out: F32, rows: tuple[int, int], tile: int) -> Callable[[], None]:
        (r0, r1), (c0, c1) = rows, (self.col_bounds[tile], self.col_bounds[tile + 1])
        weights = self.weight_tiles[tile]

        def job() -> None:
            np.matmul(cols[r0:r1], weights, out=out[r0:r1, c0:c1])

        return job
