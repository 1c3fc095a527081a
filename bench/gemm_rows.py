"""Benchmark and proof for issue 14's question: may a batch's GEMM rows go into one OpenBLAS call?

``fpgaserve.npu.gemm`` runs each example's rows in their own single-threaded calls so that an image's
bits never depend on its batch, and OpenBLAS then packs an op's weights once per example. Stacking a
batch part's examples into one call would pack them once, if a row's float32 sum did not depend on
where the row sits in the call. This script measures what it does depend on, builds the stacked GEMM
that this allows (``PackedGemm``), proves it deterministic and times it against the current tiles:

1. ``row_layout()``: the row group of this OpenBLAS's single-threaded sgemm and the classes of offsets
   in a group that sum alike (on this AMD EPYC: groups of 12 rows, offsets 0-5 and 6-11);
2. ``--check``: every example of a batch gets the bits it gets alone, in batches of 2-8, on one thread
   and spread over helper threads, on ResNet-50's GEMM shapes (an assertion, not a timing);
3. per GEMM shape of ResNet-50, thread CPU time of the current tiles and of ``PackedGemm``;
4. ``--models``: the same per network, executor with each GEMM, one core, batches 1, 4 and 8.

    python bench/gemm_rows.py --check --models resnet50 efficientnet-lite0 --repeats 7

``PackedGemm``: each example's rows get the class of their offset in the example's own layout padded
to whole groups; a batch's rows are copied into whole groups with every row at an offset of its class
(a few zero rows pad the last group), multiplied in one call per weight column tile, and copied back.
Examples of more than 256 rows are read in place, one call per example for their whole groups, with
the short last groups of the batch packed into one more call.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from fpgaserve.npu import gemm, share
from fpgaserve.npu.threads import blas_single_threaded

# (rows per example, reduction, outputs) of ResNet-50's convolutions at 224 x 224
RESNET_SHAPES = [
    (12544, 147, 64), (3136, 64, 64), (3136, 576, 64), (3136, 64, 256), (3136, 256, 64),
    (784, 1152, 128), (784, 128, 512), (784, 512, 128), (784, 256, 512),
    (196, 2304, 256), (196, 256, 1024), (196, 1024, 256), (196, 512, 1024),
    (49, 4608, 512), (49, 512, 2048), (49, 2048, 512), (49, 1024, 2048),
]  # fmt: skip
MAX_PACKED_ROWS = 256  # above it the copies cost more than the packing saves (measured)
PACKED_MAX_ROWS: int | None = None  # --packed-max-rows: ops with more rows per example keep the tiles


@dataclass(frozen=True)
class RowLayout:
    group: int  # rows the sgemm driver hands its micro-kernel at a time
    classes: tuple[int, ...]  # class of each offset in a group: offsets of one class sum alike


@cache
def row_layout() -> RowLayout | None:
    """The smallest group (4-96 rows) whose whole groups give a row the same bits in calls of any
    length starting on a multiple of it, with the offsets that sum alike (None: no such group)."""
    rng = np.random.default_rng(14)
    cases = []  # small and large reductions and outputs (OpenBLAS blocks both past a few hundred)
    for k, n in ((24, 40), (300, 72), (200, 900)):
        cases.append(
            (rng.standard_normal((384, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32))
        )
    with blas_single_threaded():
        whole = [a @ w for a, w in cases]
        for g in (4, 8, 12, 16, 24, 32, 48, 64, 96):
            if all(
                np.array_equal(a[s : s + length] @ w, full[s : s + length])
                for (a, w), full in zip(cases, whole, strict=True)
                for s, length in ((g, 192), (3 * g, g), (96, 96 + g))
            ):
                return RowLayout(g, _offset_classes(g, cases))
    return None


def _offset_classes(g: int, cases: list[tuple[np.ndarray, np.ndarray]]) -> tuple[int, ...]:
    results = []
    for o in range(g):  # 8 rows of each case, each alone in a group at offset o
        mine = []
        for a, w in cases:
            padded = np.zeros((8 * g, a.shape[1]), np.float32)
            padded[np.arange(8) * g + o] = a[:8]
            mine.append((padded @ w)[np.arange(8) * g + o])
        results.append(mine)
    classes: list[int] = []
    for o in range(g):
        same = next((p for p in range(o) if all(map(np.array_equal, results[p], results[o]))), None)
        classes.append(classes[same] if same is not None else max(classes, default=-1) + 1)
    return tuple(classes)


@dataclass(frozen=True)
class PackedGemm:
    """A drop-in for ``TiledGemm``: the rows of a batch part in whole row groups of one call."""

    rows: int
    col_bounds: tuple[int, ...]
    weight_tiles: tuple[np.ndarray, ...]
    layout: RowLayout
    _packings: dict[tuple[int, bool], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def build(cls, *, weights: np.ndarray, rows: int) -> Any:
        if PACKED_MAX_ROWS is not None and rows > PACKED_MAX_ROWS:
            return gemm.TiledGemm.build(weights=weights, rows=rows)
        layout = row_layout()
        if layout is None:
            raise SystemExit("this BLAS has no row group: nothing to stack")
        _, cols = gemm.tile_grid(rows=rows, outputs=weights.shape[1])  # the same column tiles
        tiles = tuple(np.ascontiguousarray(weights[:, lo:hi]) for lo, hi in itertools.pairwise(cols))
        return cls(rows, cols, tiles, layout)

    def __call__(self, cols: np.ndarray) -> np.ndarray:
        n, g = cols.shape[0] // self.rows, self.layout.group
        out = np.empty((cols.shape[0], self.col_bounds[-1]), np.float32)
        spread = share.spreading()
        whole = self.rows // g * g
        finish: Callable[[], None] | None = None
        if whole == self.rows:
            calls = self._split(cols, out, 0, len(cols), spread)
        elif self.rows <= MAX_PACKED_ROWS:
            calls, finish = self._packed(cols, out, n, spread, tails=False)
        else:
            calls = [
                c
                for base in range(0, len(cols), self.rows)
                for c in self._split(cols, out, base, base + whole, spread)
            ]
            more, finish = self._packed(cols, out, n, False, tails=True)
            calls += more
        jobs = [self._job(*call) for call in calls]
        with blas_single_threaded():
            share.run_shared(jobs)
        if finish is not None:
            finish()
        return out

    def _job(self, a: np.ndarray, r0: int, r1: int, tile: int, y: np.ndarray) -> Callable[[], None]:
        c0, c1 = self.col_bounds[tile], self.col_bounds[tile + 1]
        weights = self.weight_tiles[tile]

        def job() -> None:
            np.matmul(a[r0:r1], weights, out=y[r0:r1, c0:c1])

        return job

    def _split(self, a: np.ndarray, y: np.ndarray, lo: int, hi: int, spread: bool) -> list[Any]:
        g = self.layout.group
        pieces = max(1, min(gemm.MAX_ROW_TILES, (hi - lo + gemm.MIN_ROW_TILE // 2) // gemm.MIN_ROW_TILE))
        pieces = pieces if spread else 1
        bounds = [lo + (hi - lo) // g * i // pieces * g for i in range(pieces)] + [hi]
        return [
            (a, r0, r1, t, y) for r0, r1 in itertools.pairwise(bounds) for t in range(len(self.weight_tiles))
        ]

    def _packing(self, n: int, tails: bool) -> tuple[np.ndarray, np.ndarray]:
        """(row of ``cols`` for each packed row, -1 for padding; packed row of each row taken)."""
        if (n, tails) not in self._packings:
            g, classes = self.layout.group, np.asarray(self.layout.classes)
            first = self.rows // g * g if tails else 0
            local = np.tile(np.arange(first, self.rows), n)
            taken = np.repeat(np.arange(n) * self.rows, self.rows - first) + local
            kinds = classes[local % g]
            slot = np.empty(len(local), np.intp)
            groups = 0
            for kind in np.unique(classes):
                offsets = np.flatnonzero(classes == kind)
                mine = np.flatnonzero(kinds == kind)
                j = np.arange(len(mine))
                slot[mine] = j // len(offsets) * g + offsets[j % len(offsets)]
                groups = max(groups, -(-len(mine) // len(offsets)))
            source = np.full(groups * g, -1, np.intp)
            source[slot] = taken
            self._packings[(n, tails)] = (source, slot)
        return self._packings[(n, tails)]

    def _packed(
        self, cols: np.ndarray, out: np.ndarray, n: int, spread: bool, *, tails: bool
    ) -> tuple[list[Any], Callable[[], None]]:
        source, slot = self._packing(n, tails)
        zero = source < 0
        a = np.take(cols, np.where(zero, 0, source), axis=0, mode="clip")  # "clip": unbuffered
        a[zero] = 0.0
        y = np.empty((len(source), self.col_bounds[-1]), np.float32)

        def finish() -> None:
            if tails:
                out[source[slot]] = y[slot]
            else:
                np.take(y, slot, axis=0, out=out, mode="clip")

        return self._split(a, y, 0, len(a), spread), finish


def check(shapes: list[tuple[int, int, int]]) -> None:
    """Every example gets its lone bits in batches of 2-8, on one thread and spread (asserted)."""
    rng = np.random.default_rng(3)
    for rows, k, n in [*shapes, (1, 1280, 1000), (7, 33, 17), (257, 64, 64)]:
        w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
        product = PackedGemm.build(weights=w, rows=rows)
        x = rng.standard_normal((8 * rows, k)).astype(np.float32)
        alone = np.concatenate(
            [product(np.ascontiguousarray(x[i * rows : (i + 1) * rows])) for i in range(8)]
        )
        for batch, spread in itertools.product((2, 3, 5, 8), (False, True)):
            with share.spread_tiles() if spread else contextlib.nullcontext():
                got = product(x[: batch * rows])
            assert np.array_equal(got, alone[: batch * rows]), (rows, k, n, batch, spread)
    print(
        f"check: every example bit-identical alone and in batches of 2, 3, 5, 8, spread or not ({len(shapes) + 3} shapes)"
    )


def thread_cpu(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return statistics.median(times)


def by_shape(batches: list[int], repeats: int) -> None:
    rng = np.random.default_rng(0)
    print("\n| rows x K x N | " + " | ".join(f"batch {b}: tiles ms, packed / tiles" for b in batches) + " |")
    print("|---|" + "---|" * len(batches))
    totals = {b: [0.0, 0.0] for b in batches}
    for rows, k, n in RESNET_SHAPES:
        w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
        tiles, packed = gemm.TiledGemm.build(weights=w, rows=rows), PackedGemm.build(weights=w, rows=rows)
        cells = []
        for b in batches:
            x = rng.standard_normal((b * rows, k)).astype(np.float32)
            t = p = 0.0
            for _ in range(3):  # interleaved
                t += thread_cpu(lambda: tiles(x), repeats)  # noqa: B023
                p += thread_cpu(lambda: packed(x), repeats)  # noqa: B023
            totals[b][0] += t / 3
            totals[b][1] += p / 3
            cells.append(f"{t / 3 * 1e3:.2f}, {p / t:.3f}")
        print(f"| {rows} x {k} x {n} | " + " | ".join(cells) + " |", flush=True)
    print("| all | " + " | ".join(f"{t * 1e3:.1f}, {p / t:.3f}" for t, p in totals.values()) + " |")


def by_model(names: list[str], repeats: int) -> None:
    import fpgaserve.npu.lowering
    from fpgaserve.npu import DeviceModel, EmulatedDevice, Executor, get_format
    from fpgaserve.sdk.zoo import get_zoo_model

    fpga = importlib.import_module("fpga")  # bench/fpga.py, beside this script
    os.environ["FPGASERVE_DATA_PARALLEL"] = "off"  # one part: every op on this thread
    print("\n| model, int12-bfp, one core | batch | tiles: thread CPU ms | packed / tiles | max abs diff |")
    print("|---|---|---|---|---|")
    for name in names:
        weights = "random" if name == "resnet50" else None
        program = get_zoo_model(
            name, model_path=fpga.MODEL_PATH, weights=weights, format=get_format("int12-bfp")
        ).program
        device = DeviceModel("bench", 1 << 30, 6, 128, 1024, 300.0)
        tiles = Executor(program, device=EmulatedDevice(device), spread=False)
        with mock.patch.object(fpgaserve.npu.lowering, "TiledGemm", PackedGemm):  # read when steps are built
            packed = Executor(program, device=EmulatedDevice(device), spread=False)
        x = np.random.default_rng(0).uniform(-1, 1, (8, *program.input_shape)).astype(np.float32)
        for b in (1, 4, 8):
            for ex in (tiles, packed):
                ex.run(x[:b])  # first-touch page faults
            diff = float(np.abs(tiles.run(x[:b]).outputs - packed.run(x[:b]).outputs).max())
            t = p = 0.0
            for _ in range(repeats):  # the kernels are single-threaded, and spread=False keeps the GEMMs so
                t += thread_cpu(lambda: tiles.run(x[:b]), 1)  # noqa: B023
                p += thread_cpu(lambda: packed.run(x[:b]), 1)  # noqa: B023
            print(f"| {name} | {b} | {t / repeats * 1e3:.1f} | {p / t:.3f} | {diff:.1e} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="assert the packed GEMM's determinism first")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--models", nargs="*", default=[])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--packed-max-rows", type=int, help="in --models, ops with more rows per example keep the tiles"
    )
    parser.add_argument("--no-shapes", action="store_true", help="skip the per-shape table")
    args = parser.parse_args(argv)
    global PACKED_MAX_ROWS
    PACKED_MAX_ROWS = args.packed_max_rows
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    print(f"{os.cpu_count()} cores; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"row layout of this BLAS: {row_layout()}")
    if args.check:
        check(RESNET_SHAPES)
    if not args.no_shapes:
        by_shape(args.batches, args.repeats)
    if args.models:
        by_model(args.models, args.repeats)
    print(f"load average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
