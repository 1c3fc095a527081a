"""Keep freed activation buffers in the process instead of handing them back to the kernel.

Role: one process-wide tuning step the executor applies once. An emulated run allocates tens of
MiB of activations per batch (about 30 MiB for EfficientNet-Lite0 at batch 1). glibc serves blocks
that large with ``mmap`` and unmaps them on free, so every run faults in fresh zeroed pages: on
this project's 2-core machine that was a third of EfficientNet-Lite0's batch-1 time (37 ms against
24 ms with the tuning; bench/fpga.py). Raising glibc's mmap and trim thresholds makes freed blocks
reusable, as TensorFlow's own arena allocator does for TensorFlow. Memory then stays at the
high-water mark of the largest batch, which is what a serving process wants.

Threads other than the main one (the server's batch worker, the parts of a split batch) allocate
from arenas of their own, whose heaps glibc unmaps as soon as they are free whatever the trim
threshold (its ``heap_trim`` consults only ``M_TOP_PAD``): about 6,000 page faults and a fifth of
the time per EfficientNet-Lite0 batch of 8 in a worker thread. ``M_TOP_PAD`` of a whole heap
(64 MiB) keeps them.

Each of those arenas then keeps its own high-water mark, and most threads used each once: the
server's load thread (the batch-1 warm-up and the program's lowering), the validators, the batch
worker and the part threads. ``M_ARENA_MAX`` = 1 puts every thread's blocks in the main arena, where
the activations of one batch reuse what another thread freed: ``fpgaserve serve`` of
EfficientNet-Lite0 478 -> 417 MiB after a batch of 8, with the same CPU time per batch (the part
threads' allocations are few and large, so the arena's lock is rarely contended; docs/benchmarks.md).
glibc picks a thread's arena at its first allocation, so the server applies this before it starts
any thread (``cli/serve.py``); later calls still cover threads that have not allocated yet. An explicit
``MALLOC_ARENA_MAX`` in the environment (glibc's own setting) is left alone.

Only glibc has ``mallopt``; elsewhere this does nothing. ``FPGASERVE_MALLOC_TUNING=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import threading

__all__ = ["tune_allocator"]

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Larger than any single activation of the zoo models at batch 8; glibc builds that cap the mmap
# threshold at 32 MiB (the documented maximum on 64-bit) get that instead.
_MMAP_THRESHOLDS = (256 << 20, 32 << 20)
_TRIM_THRESHOLD = 1 << 30
_TOP_PAD = 64 << 20  # glibc's per-thread heap size (HEAP_MAX_SIZE on 64-bit)
_ARENA_MAX = 1

_lock = threading.Lock()
_applied: bool | None = None


def tune_allocator() -> bool:
    """Apply the tuning once per process; returns whether it is in effect."""
    global _applied
    with _lock:
        if _applied is None:
            _applied = _apply()
        return _applied


def _apply() -> bool:
    if os.environ.get("FPGASERVE_MALLOC_TUNING", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None)
    if mallopt is None:
        return False
    if not any(mallopt(_M_MMAP_THRESHOLD, value) == 1 for value in _MMAP_THRESHOLDS):
        return False
    ok = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and mallopt(_M_TOP_PAD, _TOP_PAD) == 1
    if "MALLOC_ARENA_MAX" not in os.environ:
        ok = ok and mallopt(_M_ARENA_MAX, _ARENA_MAX) == 1
    logger.debug("glibc malloc tuned for activation buffers: %s", ok)
    return bool(ok)
