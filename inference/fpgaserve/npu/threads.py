"""Thread limits for running parts of a batch side by side (data parallelism).

Role: ``Executor.run`` may split a batch into parts and run them concurrently, one thread per core,
instead of spreading every op over all cores. Each part must then run its kernels on its own thread
only:

- numba: the kernels are single-threaded (``share.py`` spreads their rows only when a batch of
  one asks for it), so a part needs nothing here, and numba's own thread pool is never started.
- OpenBLAS: numpy's OpenBLAS has no thread-local control (its ``openblas_set_num_threads_local``
  sets the global count, measured), and two concurrent GEMMs on 2 threads each cost the split
  most of its gain (measured: 60 against 74 inputs/s). ``blas_single_threaded`` therefore sets the
  global count to 1 while at least one split run is in progress and restores it after the last.
- glibc: the parts allocate in their threads' arenas; ``allocator.py`` keeps those heaps mapped.

None of this changes results: the kernels split rows, never reductions, across threads, and the
GEMMs run in fixed single-threaded tiles (``gemm.py``).
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

__all__ = ["available_cores", "blas_single_threaded"]


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@cache
def _openblas() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    """numpy's OpenBLAS (get, set) of the global thread count, if numpy uses OpenBLAS."""
    import numpy

    libs = os.path.join(os.path.dirname(os.path.dirname(numpy.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)  # already loaded by numpy: this only looks it up
        except OSError:
            continue
        for suffix in ("64_", "", "_64"):
            get = getattr(lib, f"scipy_openblas_get_num_threads{suffix}", None)
            put = getattr(lib, f"scipy_openblas_set_num_threads{suffix}", None)
            if get is None or put is None:
                get = getattr(lib, f"openblas_get_num_threads{suffix}", None)
                put = getattr(lib, f"openblas_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype, put.argtypes, put.restype = ctypes.c_int, [ctypes.c_int], None
                return get, put
    return None


_blas_lock = threading.Lock()
_blas_users = 0
_blas_previous = 0


@contextmanager
def blas_single_threaded() -> Iterator[None]:
    """OpenBLAS on one thread (process-wide) while any such block runs; restored after the last."""
    global _blas_users, _blas_previous
    blas = _openblas()
    if blas is None:
        yield
        return
    get, put = blas
    with _blas_lock:
        _blas_users += 1
        if _blas_users == 1:
            _blas_previous = get()
            put(1)
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                put(_blas_previous)
