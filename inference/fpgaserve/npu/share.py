"""Work of one op shared between the calling thread and helper threads: GEMM tiles and kernel row tiles.

Role: ``Executor.run`` decides, with ``spread_tiles``, whether the ops of a run share their work with
this module's helper threads or run it on the calling thread. The GEMMs (``gemm.py``) hand their fixed
tiles to ``run_shared``; the numba kernels (``kernels_numba``, ``numba_bfp``, ``numba_depthwise``) are
plain single-threaded kernels over a range of output rows, and ``run_rows`` cuts their rows into tiles.

Why not numba's ``prange``: each parallel region ends in a barrier over numba's threads, about a
hundred per run of a network, and on a host whose cores other processes also want the barrier waits
for a thread the scheduler has not run yet (spread.py has the figures). parfor lowering is also most
of a cold compile (a kernel with ``parallel=True`` took 5-11 s to compile, docs/benchmarks.md).

Sharing: the calling thread and the helpers take jobs from one counter, and the caller waits only for
jobs a helper has started; a helper the scheduler runs late finds no work and returns. So a busy core
slows a run down to one core's speed, never below it.

Numerics: a kernel's output rows are independent (threads split rows, never reductions), so any row
tiling gives the same bits; the tiles are still chosen by the op's shape alone, as the GEMM's are.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache

from fpgaserve.npu.threads import available_cores

__all__ = [
    "MAX_ROW_TILES",
    "MIN_TILE_WORK",
    "row_bounds",
    "run_rows",
    "run_shared",
    "spread_tiles",
    "spreading",
]

# A kernel's row tile does at least this much work (values read or written, counted by the caller):
# below it, handing the tile to a helper (tens of microseconds until it runs) costs more than the tile.
MIN_TILE_WORK = 32768
MAX_ROW_TILES = 8  # enough to share over a few cores and to even out a late helper

_local = threading.local()


@contextmanager
def spread_tiles() -> Iterator[None]:
    """Within the block, ops on this thread share their tiles with the helper threads."""
    previous = getattr(_local, "spread", False)
    _local.spread = True
    try:
        yield
    finally:
        _local.spread = previous


def spreading() -> bool:
    """Whether the calling thread is inside ``spread_tiles``."""
    return bool(getattr(_local, "spread", False))


def row_bounds(rows: int, work_per_row: int) -> tuple[int, ...]:
    """Boundaries of a kernel's row tiles, from its shape alone."""
    tiles = max(1, min(MAX_ROW_TILES, rows, rows * work_per_row // MIN_TILE_WORK))
    return tuple(rows * i // tiles for i in range(tiles + 1))


def run_rows(kernel: Callable[[int, int], None], rows: int, work_per_row: int) -> None:
    """``kernel(lo, hi)`` over ``rows`` output rows: in one call, or in row tiles shared with the
    helper threads when spreading."""
    if not spreading():
        kernel(0, rows)
        return
    bounds = row_bounds(rows, work_per_row)
    if len(bounds) == 2:
        kernel(0, rows)
        return
    run_shared([_bind(kernel, lo, hi) for lo, hi in itertools.pairwise(bounds)])


def _bind(kernel: Callable[[int, int], None], lo: int, hi: int) -> Callable[[], None]:
    def job() -> None:
        kernel(lo, hi)

    return job


def run_shared(jobs: list[Callable[[], None]]) -> None:
    """Run ``jobs``: shared with the helper threads when spreading and there is more than one."""
    if len(jobs) < 2 or not spreading():
        for job in jobs:
            job()
        return
    shared = _Shared(jobs)
    pool = _helpers()
    for _ in range(min(len(jobs), available_cores()) - 1):
        pool.submit(shared.work)
    shared.work()
    shared.wait()


class _Shared:
    """Jobs taken from one counter by the caller and any helpers that get to run."""

    def __init__(self, jobs: list[Callable[[], None]]) -> None:
        self._jobs = jobs
        self._next = itertools.count()  # next() on a count is atomic under the GIL
        self._lock = threading.Lock()
        self._left = len(jobs)
        self._done = threading.Event()
        self.error: BaseException | None = None

    def work(self) -> None:
        for i in self._next:
            if i >= len(self._jobs):
                return
            try:
                self._jobs[i]()
            except BaseException as exc:  # reported to the caller, which re-raises it
                self.error = exc
            with self._lock:
                self._left -= 1
                if self._left == 0:
                    self._done.set()

    def wait(self) -> None:
        self._done.wait()
        if self.error is not None:
            raise self.error


@cache
def _helpers() -> ThreadPoolExecutor:
    """The helper threads (one per core besides the caller's; made on first use)."""
    return ThreadPoolExecutor(
        max_workers=max(1, available_cores() - 1), thread_name_prefix="fpgaserve-npu-tile"
    )
